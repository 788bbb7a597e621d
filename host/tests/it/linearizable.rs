//! A linearizability checker for histories of one register (or counter), after Wing and Gong's search
//! with Lowe's memoization ("Testing for linearizability", 2017): it looks for an order of
//! the operations that respects real time (an operation that returned before another was
//! called comes first) and that the register's sequential model accepts.
//!
//! An operation whose outcome is unknown (its request failed or timed out, so it may or may
//! not have taken effect) never returns: it may be placed anywhere after its call, or left
//! out. A failed read is dropped before checking: it changed nothing.

use std::collections::HashSet;

/// What a client asked of the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Read the value and its revision.
    Read,
    /// Write unconditionally.
    Write(String),
    /// Write if the register is at revision `expect` (0: absent).
    Cas {
        /// The revision required.
        expect: u64,
        /// The value to write.
        value: String,
    },
    /// Add one to the register as a counter (absent counts as 0).
    Increment,
}

/// What the register answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A read: the value (absent: `None`) and its revision (0 when absent).
    Read(Option<String>, u64),
    /// A write applied at this revision.
    Written(u64),
    /// A conditional write found the register at this revision, and changed nothing.
    Conflict(u64),
    /// An increment made the counter this.
    Counted(i64),
}

/// One operation of a history; times in any monotonic unit.
#[derive(Clone, Debug)]
pub struct Op {
    /// The client that issued it (for messages only).
    pub client: usize,
    /// When it was called.
    pub call: u64,
    /// When it returned (`None`: its outcome is unknown).
    pub ret: Option<u64>,
    /// What was asked.
    pub input: Input,
    /// What was answered (`None`: unknown).
    pub output: Option<Output>,
}

/// The register's state in the sequential model: its value and revision (`None` after a
/// write whose revision nobody saw).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    value: Option<String>,
    revision: Option<u64>,
}

/// The states the register may be in after `op`, from `s` (none: `op` cannot come next).
fn step(s: &State, op: &Op) -> Vec<State> {
    let at = |r: u64| s.revision.is_none_or(|have| have == r);
    let newer = |r: u64| s.revision.is_none_or(|have| r > have);
    match (&op.input, &op.output) {
        (Input::Read, Some(Output::Read(value, revision))) => {
            if *value == s.value && at(*revision) {
                vec![State {
                    value: value.clone(),
                    revision: Some(*revision),
                }]
            } else {
                vec![]
            }
        }
        (Input::Write(v), Some(Output::Written(r))) if newer(*r) => vec![State {
            value: Some(v.clone()),
            revision: Some(*r),
        }],
        (Input::Cas { expect, value }, Some(Output::Written(r))) if at(*expect) && newer(*r) => {
            vec![State {
                value: Some(value.clone()),
                revision: Some(*r),
            }]
        }
        (Input::Cas { expect, .. }, Some(Output::Conflict(c))) if c != expect && at(*c) => {
            vec![State {
                value: s.value.clone(),
                revision: Some(*c),
            }]
        }
        (Input::Increment, Some(Output::Counted(n))) if count(s) + 1 == *n => vec![State {
            value: Some(n.to_string()),
            revision: s.revision,
        }],
        // Unknown outcome: it took effect, or it did not.
        (Input::Increment, None) => vec![
            State {
                value: Some((count(s) + 1).to_string()),
                revision: s.revision,
            },
            s.clone(),
        ],
        (Input::Write(v), None) => vec![
            State {
                value: Some(v.clone()),
                revision: None,
            },
            s.clone(),
        ],
        (Input::Cas { expect, value }, None) => {
            let mut out = vec![s.clone()];
            if at(*expect) {
                out.push(State {
                    value: Some(value.clone()),
                    revision: None,
                });
            }
            out
        }
        _ => vec![],
    }
}

/// The register as a counter: absent (or not a number) counts as 0.
fn count(s: &State) -> i64 {
    s.value.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Checks a history of one register that starts absent. `Err` names the operation no
/// order could place.
pub fn check(history: &[Op]) -> Result<(), String> {
    // Failed reads changed nothing.
    let ops: Vec<&Op> = history
        .iter()
        .filter(|o| !(o.input == Input::Read && o.output.is_none()))
        .collect();
    let n = ops.len();
    // Events in time order: (time, is_return, op). Calls before returns at the same time, so
    // operations that touch are taken as concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        events.push((o.call, false, i));
        events.push((o.ret.unwrap_or(u64::MAX), true, i));
    }
    events.sort();
    // A doubly-linked list over the events, with a sentinel at index `len`.
    let len = events.len();
    if len == 0 {
        return Ok(());
    }
    let next: Vec<usize> = (1..=len).chain([0]).collect();
    let prev: Vec<usize> = std::iter::once(len).chain(0..len).collect();
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    for (e, (_, is_ret, i)) in events.iter().enumerate() {
        if *is_ret {
            ret_at[*i] = e;
        } else {
            call_at[*i] = e;
        }
    }
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut search = Search {
        stack: Vec::new(),
        list: List { next, prev },
        call_at,
        ret_at,
    };
    let mut state = State {
        value: None,
        revision: Some(0),
    };
    let mut entry = search.list.next[len];
    let mut deepest = 0usize;
    // The furthest the search got: the operations placed, and the register's state then.
    let mut best: (Vec<u64>, State) = (linearized.clone(), state.clone());
    while search.list.next[len] != len {
        if entry == len {
            // Past the end with calls left only: backtrack.
            if !backtrack(
                &mut search,
                &mut state,
                &mut linearized,
                &mut entry,
                &mut seen,
            ) {
                return Err(explain(&ops, deepest, &best));
            }
            continue;
        }
        let (_, is_ret, i) = events[entry];
        if !is_ret {
            let mut options = step(&state, ops[i]).into_iter();
            let mut moved = false;
            while let Some(s) = options.next() {
                let mut l = linearized.clone();
                l[i / 64] |= 1 << (i % 64);
                if seen.insert((l.clone(), s.clone())) {
                    search.stack.push((i, state.clone(), options.collect()));
                    state = s;
                    linearized = l;
                    search.list.unlink(search.call_at[i]);
                    search.list.unlink(search.ret_at[i]);
                    if search.stack.len() > deepest {
                        deepest = search.stack.len();
                        best = (linearized.clone(), state.clone());
                    }
                    entry = search.list.next[len];
                    moved = true;
                    break;
                }
            }
            if !moved {
                entry = search.list.next[entry];
            }
        } else if !backtrack(
            &mut search,
            &mut state,
            &mut linearized,
            &mut entry,
            &mut seen,
        ) {
            return Err(explain(&ops, deepest, &best));
        }
    }
    Ok(())
}

/// The events not placed yet, in time order: a doubly-linked list whose last node is a
/// sentinel.
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl List {
    fn unlink(&mut self, e: usize) {
        let (p, q) = (self.prev[e], self.next[e]);
        self.next[p] = q;
        self.prev[q] = p;
    }

    /// Undoes `unlink(e)`; unlinks must be undone last first.
    fn relink(&mut self, e: usize) {
        let (p, q) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[q] = e;
    }

    fn head(&self) -> usize {
        self.next[self.next.len() - 1]
    }
}

/// The search: the operations placed so far, last on top, each with the state before it and
/// the other states it could have led to.
struct Search {
    stack: Vec<(usize, State, Vec<State>)>,
    list: List,
    call_at: Vec<usize>,
    ret_at: Vec<usize>,
}

/// Undoes the last placement, or tries another state it could have led to; `false` when
/// nothing is left to undo.
fn backtrack(
    search: &mut Search,
    state: &mut State,
    linearized: &mut [u64],
    entry: &mut usize,
    seen: &mut HashSet<(Vec<u64>, State)>,
) -> bool {
    let Some((i, before, mut others)) = search.stack.pop() else {
        return false;
    };
    // Another outcome of the same operation at the same place.
    while let Some(s) = others.pop() {
        if seen.insert((linearized.to_vec(), s.clone())) {
            search.stack.push((i, before, others));
            *state = s;
            *entry = search.list.head();
            return true;
        }
    }
    *state = before;
    linearized[i / 64] &= !(1 << (i % 64));
    search.list.relink(search.ret_at[i]);
    search.list.relink(search.call_at[i]);
    *entry = search.list.next[search.call_at[i]];
    true
}

fn explain(ops: &[&Op], deepest: usize, best: &(Vec<u64>, State)) -> String {
    let placed = |i: usize| best.0[i / 64] & (1 << (i % 64)) != 0;
    let show = |o: &Op| {
        format!(
            "client {} [{}, {}] {:?} -> {:?}",
            o.client,
            o.call,
            o.ret.map_or("?".into(), |r| r.to_string()),
            o.input,
            o.output
        )
    };
    // The operation that could not be placed: the earliest to return among those left.
    let stuck = (0..ops.len())
        .filter(|i| !placed(*i))
        .min_by_key(|i| ops[*i].ret.unwrap_or(u64::MAX));
    let mut lines = vec![format!(
        "the furthest order placed {deepest} of {} operations, leaving the register at {:?}",
        ops.len(),
        best.1
    )];
    if let Some(i) = stuck {
        let o = ops[i];
        lines.push(format!("then nothing could place: {}", show(o)));
        lines.push("operations that overlap it or are left before it:".into());
        for (j, p) in ops.iter().enumerate() {
            let overlaps =
                p.call <= o.ret.unwrap_or(u64::MAX) && p.ret.unwrap_or(u64::MAX) >= o.call;
            if j != i && (overlaps || (!placed(j) && p.call <= o.call)) {
                lines.push(format!(
                    "  {}{}",
                    if placed(j) { "" } else { "(left) " },
                    show(p)
                ));
            }
        }
    }
    format!("not linearizable: {}", lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: Option<u64>, input: Input, output: Option<Output>) -> Op {
        Op {
            client: 0,
            call,
            ret,
            input,
            output,
        }
    }

    fn w(v: &str) -> Input {
        Input::Write(v.into())
    }

    fn read(v: Option<&str>, r: u64) -> Option<Output> {
        Some(Output::Read(v.map(String::from), r))
    }

    #[test]
    fn the_checker_accepts_linearizable_histories_and_refuses_the_others() {
        let cases: Vec<(&str, Vec<Op>, bool)> = vec![
            ("empty", vec![], true),
            (
                "sequential write then read",
                vec![
                    op(0, Some(1), w("a"), Some(Output::Written(5))),
                    op(2, Some(3), Input::Read, read(Some("a"), 5)),
                ],
                true,
            ),
            (
                "a stale read after a completed write",
                vec![
                    op(0, Some(1), w("a"), Some(Output::Written(5))),
                    op(2, Some(3), w("b"), Some(Output::Written(6))),
                    op(4, Some(5), Input::Read, read(Some("a"), 5)),
                ],
                false,
            ),
            (
                "a read concurrent with a write may see either",
                vec![
                    op(0, Some(1), w("a"), Some(Output::Written(5))),
                    op(2, Some(6), w("b"), Some(Output::Written(6))),
                    op(3, Some(4), Input::Read, read(Some("a"), 5)),
                    op(5, Some(7), Input::Read, read(Some("b"), 6)),
                ],
                true,
            ),
            (
                "two reads that disagree on order",
                vec![
                    op(0, Some(10), w("a"), Some(Output::Written(5))),
                    op(0, Some(10), w("b"), Some(Output::Written(6))),
                    op(1, Some(2), Input::Read, read(Some("b"), 6)),
                    op(3, Some(4), Input::Read, read(Some("a"), 5)),
                ],
                false,
            ),
            (
                "compare-and-set at the right revision, and a conflict",
                vec![
                    op(0, Some(1), w("a"), Some(Output::Written(5))),
                    op(
                        2,
                        Some(3),
                        Input::Cas {
                            expect: 5,
                            value: "b".into(),
                        },
                        Some(Output::Written(7)),
                    ),
                    op(
                        4,
                        Some(5),
                        Input::Cas {
                            expect: 5,
                            value: "c".into(),
                        },
                        Some(Output::Conflict(7)),
                    ),
                    op(6, Some(7), Input::Read, read(Some("b"), 7)),
                ],
                true,
            ),
            (
                "two compare-and-sets from the same revision both succeed",
                vec![
                    op(0, Some(1), w("a"), Some(Output::Written(5))),
                    op(
                        2,
                        Some(5),
                        Input::Cas {
                            expect: 5,
                            value: "b".into(),
                        },
                        Some(Output::Written(7)),
                    ),
                    op(
                        2,
                        Some(5),
                        Input::Cas {
                            expect: 5,
                            value: "c".into(),
                        },
                        Some(Output::Written(8)),
                    ),
                ],
                false,
            ),
            (
                "a write of unknown outcome seen later",
                vec![
                    op(0, None, w("a"), None),
                    op(5, Some(6), Input::Read, read(Some("a"), 9)),
                ],
                true,
            ),
            (
                "a write of unknown outcome never seen",
                vec![
                    op(0, None, w("a"), None),
                    op(5, Some(6), Input::Read, read(None, 0)),
                ],
                true,
            ),
            (
                "a value that was never written",
                vec![op(5, Some(6), Input::Read, read(Some("z"), 3))],
                false,
            ),
            (
                "a failed read is dropped",
                vec![
                    op(0, Some(1), w("a"), Some(Output::Written(5))),
                    op(2, None, Input::Read, None),
                ],
                true,
            ),
            (
                "concurrent increments in any order",
                vec![
                    op(0, Some(5), Input::Increment, Some(Output::Counted(2))),
                    op(1, Some(4), Input::Increment, Some(Output::Counted(1))),
                    op(6, Some(7), Input::Increment, Some(Output::Counted(3))),
                ],
                true,
            ),
            (
                "an increment that lost another (a lost update)",
                vec![
                    op(0, Some(5), Input::Increment, Some(Output::Counted(1))),
                    op(1, Some(4), Input::Increment, Some(Output::Counted(1))),
                ],
                false,
            ),
            (
                "a later increment below an earlier one",
                vec![
                    op(0, Some(1), Input::Increment, Some(Output::Counted(1))),
                    op(2, Some(3), Input::Increment, Some(Output::Counted(2))),
                    op(4, Some(5), Input::Increment, Some(Output::Counted(1))),
                ],
                false,
            ),
            (
                "an increment of unknown outcome, counted or not",
                vec![
                    op(0, None, Input::Increment, None),
                    op(1, Some(2), Input::Increment, Some(Output::Counted(2))),
                    op(3, None, Input::Increment, None),
                    op(4, Some(5), Input::Increment, Some(Output::Counted(3))),
                ],
                true,
            ),
        ];
        for (what, history, ok) in cases {
            assert_eq!(check(&history).is_ok(), ok, "{what}: {:?}", check(&history));
        }
    }

    #[test]
    fn many_concurrent_clients_are_checked_quickly() {
        // A long linearizable history: 4 clients, each write seen by the next reads.
        let mut history = Vec::new();
        let mut t = 0;
        let mut rev = 0;
        let mut value: Option<String> = None;
        for i in 0..2000u64 {
            let client = (i % 4) as usize;
            if i % 3 == 0 {
                rev += 2;
                let v = format!("v{i}");
                history.push(Op {
                    client,
                    call: t,
                    ret: Some(t + 3),
                    input: Input::Write(v.clone()),
                    output: Some(Output::Written(rev)),
                });
                value = Some(v);
            } else {
                history.push(Op {
                    client,
                    call: t,
                    ret: Some(t + 3),
                    input: Input::Read,
                    output: Some(Output::Read(value.clone(), rev)),
                });
            }
            t += 2;
        }
        check(&history).unwrap();
    }
}
