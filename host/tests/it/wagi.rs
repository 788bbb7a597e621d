//! A WASI 0.1 program (a core module built for `wasm32-wasip1` with `main`) deploys as an HTTP
//! handler served the CGI way: request line, headers and query in its environment, the body on
//! stdin, its printed header lines and body as the response. A module that cannot be served so
//! gets a clear 400 at deploy.

use reqwest::{Method, StatusCode};
use weft_host::plugins;

use crate::harness::TestNode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_0_1_program_serves_the_cgi_way() {
    let n = TestNode::start().await;
    let f = n.deploy("echo", plugins::WAGI_ECHO).await;
    assert_eq!(f["kind"], "wagi", "{f}");

    let r = n
        .anon(Method::POST, "/fn/echo/items/7?sort=asc&x=1")
        .header("x-greeting", "bonjour")
        .body("the body")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-echoed-by"], "wagi-echo");
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["path"], "/items/7", "{echo}");
    assert_eq!(echo["query"], "sort=asc&x=1", "{echo}");
    assert_eq!(echo["greeting"], "bonjour", "{echo}");
    assert_eq!(echo["content_length"], "8", "{echo}");
    assert_eq!(echo["body"], "the body", "{echo}");

    // `Status:` sets the status.
    let r = n
        .anon(Method::GET, "/fn/echo/status/418")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::IM_A_TEAPOT);
    // A program that exits with a failure gets 500, and the node serves on.
    let r = n.anon(Method::GET, "/fn/echo/fail").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let r = n.anon(Method::GET, "/fn/echo/again").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Modules that cannot be served so are refused at deploy, saying why.
    for (bytes, says) in [
        (module(&[], &["run"]), "needs a `_start` export"),
        (module(&[("env", "f")], &["_start"]), "env::f"),
        (b"\0asm\x01\0\0\0\x01".to_vec(), "not valid WebAssembly"),
    ] {
        let (status, body) = n.deploy_with("bad", bytes, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body.to_string().contains(says), "{says}: {body}");
    }
    let r = n.anon(Method::GET, "/fn/echo/still").send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "the node serves after bad deploys"
    );
}

/// A module of one empty function exported as each of `exports`, importing `imports`.
fn module(imports: &[(&str, &str)], exports: &[&str]) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection,
        ImportSection, Instruction, Module, TypeSection,
    };
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    if !imports.is_empty() {
        let mut section = ImportSection::new();
        for (module, name) in imports {
            section.import(module, name, EntityType::Function(0));
        }
        m.section(&section);
    }
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut section = ExportSection::new();
    for name in exports {
        section.export(name, ExportKind::Func, imports.len() as u32);
    }
    m.section(&section);
    let mut code = CodeSection::new();
    let mut body = Function::new([]);
    body.instruction(&Instruction::End);
    code.function(&body);
    m.section(&code);
    m.finish()
}
