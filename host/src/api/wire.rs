//! Keyed invocation's messages between nodes: an HTTP request forwarded whole to the node
//! that owns its key, and the whole answer.

use serde::{Deserialize, Serialize};

use crate::id::FunctionName;
use crate::rpc::Wire;

/// Forwarded invocation's service on the router.
pub struct InvokeWire;

impl Wire for InvokeWire {
    const NAME: &'static str = "invoke";
    const TAG: u8 = 4;
    const VERSION: u8 = 1;
    type Request = Forwarded;
    type Response = ForwardedAnswer;
}

/// An HTTP request forwarded to the node that owns its key.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// The function.
    pub function: FunctionName,
    /// The HTTP method.
    pub method: String,
    /// The path below the function, with the query.
    pub target: String,
    /// The request's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request's body.
    pub body: Vec<u8>,
}

/// The answer of a forwarded request, whole.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The response's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The response's body.
    pub body: Vec<u8>,
}
