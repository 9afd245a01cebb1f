//! The history format: JSON lines, one client event per line.
//!
//! ```text
//! {"process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 7, "time": 1200}
//! {"process": 3, "type": "ok", "f": "write", "key": "k1", "value": 7, "time": 3400}
//! {"process": 4, "type": "invoke", "f": "cas", "key": "k1", "value": [7, 8], "time": 3500}
//! {"process": 4, "type": "fail", "f": "cas", "key": "k1", "value": [7, 8], "time": 4100}
//! ```
//!
//! - `type`: `invoke`, then one of `ok`, `fail` or `info` from the same
//!   process. A process has at most one operation open at a time.
//! - `f`: `read`, `write` or `cas`. A completed `read` carries the value it
//!   read (`null`: the key was missing). A `cas` value is `[expected, new]`
//!   (`expected` `null`: the key must be absent).
//! - `fail` means the operation certainly did not take effect; for a `cas`
//!   it means the comparison did not match (it happened, and saw another
//!   value). `info` means the outcome is unknown; an invoke with no
//!   completion at all counts as `info`.
//! - `time`: nanoseconds since the start of the run (any monotone unit).
//! - Values are integers (unique per write, so that a read names its write).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use crate::{Op, Operation, Outcome, Value};

/// Why a history could not be read, with the line (1-based) at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The line at fault.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// One event as it appears on a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The client process.
    pub process: u64,
    /// `invoke`, `ok`, `fail` or `info`.
    pub kind: EventKind,
    /// The operation.
    pub op: Op,
    /// For a completed read, the value read.
    pub read: Option<Option<Value>>,
    /// The key.
    pub key: String,
    /// The time.
    pub time: u64,
}

/// The `type` of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The operation starts.
    Invoke,
    /// It completed and took effect (a read: it read `value`).
    Ok,
    /// It certainly did not take effect (a cas: the comparison failed).
    Fail,
    /// Its outcome is unknown.
    Info,
}

impl EventKind {
    fn name(self) -> &'static str {
        match self {
            EventKind::Invoke => "invoke",
            EventKind::Ok => "ok",
            EventKind::Fail => "fail",
            EventKind::Info => "info",
        }
    }
}

fn value_of(json: &Json, what: &str) -> Result<Option<Value>, String> {
    match json {
        Json::Null => Ok(None),
        Json::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{what} must be a non-negative integer or null, not {n}")),
        other => Err(format!("{what} must be an integer or null, not {other}")),
    }
}

/// Parses one line.
pub fn parse_event(line: &str) -> Result<Event, String> {
    let json: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = json.as_object().ok_or("not a JSON object")?;
    let field = |name: &str| obj.get(name).ok_or_else(|| format!("missing \"{name}\""));
    let process = field("process")?
        .as_u64()
        .ok_or("\"process\" must be a non-negative integer")?;
    let kind = match field("type")?.as_str() {
        Some("invoke") => EventKind::Invoke,
        Some("ok") => EventKind::Ok,
        Some("fail") => EventKind::Fail,
        Some("info") => EventKind::Info,
        _ => return Err("\"type\" must be invoke, ok, fail or info".into()),
    };
    let key = match field("key")? {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    let time = field("time")?
        .as_u64()
        .ok_or("\"time\" must be a non-negative integer")?;
    let value = obj.get("value").unwrap_or(&Json::Null);
    let (op, read) = match field("f")?.as_str() {
        Some("read") => {
            let read = (kind == EventKind::Ok)
                .then(|| value_of(value, "a read's value"))
                .transpose()?;
            (Op::Read, read)
        }
        Some("write") => {
            let v = value_of(value, "a write's value")?.ok_or("a write needs a value")?;
            (Op::Write(v), None)
        }
        Some("delete") => (Op::Delete, None),
        Some("cas") => {
            let pair = value
                .as_array()
                .filter(|a| a.len() == 2)
                .ok_or("a cas value must be [expected, new]")?;
            let expected = value_of(&pair[0], "a cas's expected value")?;
            let new = value_of(&pair[1], "a cas's new value")?.ok_or("a cas needs a new value")?;
            (Op::Cas { expected, new }, None)
        }
        _ => return Err("\"f\" must be read, write, delete or cas".into()),
    };
    Ok(Event {
        process,
        kind,
        op,
        read,
        key,
        time,
    })
}

/// Reads a whole history, pairing each completion with its process's
/// invocation. Refuses, with the line, anything that does not follow the
/// format.
pub fn parse(text: &str) -> Result<Vec<Operation>, ParseError> {
    let mut ops: Vec<Operation> = Vec::new();
    let mut open: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| ParseError {
            line: line_no,
            reason,
        };
        let event = parse_event(line).map_err(err)?;
        match event.kind {
            EventKind::Invoke => {
                if let Some((at, _)) = open.get(&event.process) {
                    return Err(err(format!(
                        "process {} invokes again while its operation from line {at} is open",
                        event.process
                    )));
                }
                open.insert(event.process, (line_no, ops.len()));
                ops.push(Operation {
                    process: event.process,
                    key: event.key,
                    op: event.op,
                    invoke: event.time,
                    complete: None,
                    outcome: Outcome::Info,
                });
            }
            kind => {
                let Some((_, index)) = open.remove(&event.process) else {
                    return Err(err(format!(
                        "{} from process {} with no open invocation",
                        kind.name(),
                        event.process
                    )));
                };
                let op = &mut ops[index];
                if op.key != event.key
                    || std::mem::discriminant(&op.op) != std::mem::discriminant(&event.op)
                {
                    return Err(err(format!(
                        "completion does not match its invocation (key {:?}, {})",
                        op.key, op.op
                    )));
                }
                if event.time < op.invoke {
                    return Err(err("completes before it was invoked".into()));
                }
                match kind {
                    EventKind::Ok => {
                        op.outcome = Outcome::Ok(event.read);
                        op.complete = Some(event.time);
                    }
                    EventKind::Fail => {
                        if op.op == Op::Read {
                            return Err(err("a read cannot fail; use info".into()));
                        }
                        op.outcome = Outcome::Fail;
                        op.complete = Some(event.time);
                    }
                    _ => op.outcome = Outcome::Info,
                }
            }
        }
    }
    Ok(ops)
}

/// Writes a history in the format, two lines per completed operation and
/// one for an operation that never completed.
pub fn write(ops: &[Operation], out: &mut String) {
    use std::fmt::Write as _;
    let mut events: Vec<(u64, usize, String)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        let (f, value) = match &op.op {
            Op::Read => ("read", Json::Null),
            Op::Write(v) => ("write", Json::from(*v)),
            Op::Delete => ("delete", Json::Null),
            Op::Cas { expected, new } => (
                "cas",
                Json::from(vec![
                    expected.map_or(Json::Null, Json::from),
                    Json::from(*new),
                ]),
            ),
        };
        let line = |kind: &str, value: &Json, time: u64| {
            serde_json::json!({
                "process": op.process, "type": kind, "f": f, "key": op.key,
                "value": value, "time": time,
            })
            .to_string()
        };
        events.push((op.invoke, i * 2, line("invoke", &value, op.invoke)));
        let done = match (&op.outcome, op.complete) {
            (Outcome::Ok(read), Some(t)) => {
                let v = match read {
                    Some(r) => r.map_or(Json::Null, Json::from),
                    None => value.clone(),
                };
                Some(line("ok", &v, t))
            }
            (Outcome::Fail, Some(t)) => Some(line("fail", &value, t)),
            (Outcome::Info, Some(t)) => Some(line("info", &value, t)),
            _ => None,
        };
        if let (Some(done), Some(t)) = (done, op.complete) {
            events.push((t, i * 2 + 1, done));
        }
    }
    events.sort();
    for (_, _, line) in events {
        let _ = writeln!(out, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_round_trips_and_checks() {
        let text = r#"{"process": 1, "type": "invoke", "f": "write", "key": "k1", "value": 7, "time": 10}
{"process": 2, "type": "invoke", "f": "read", "key": "k1", "value": null, "time": 11}
{"process": 1, "type": "ok", "f": "write", "key": "k1", "value": 7, "time": 20}
{"process": 2, "type": "ok", "f": "read", "key": "k1", "value": 7, "time": 30}
{"process": 3, "type": "invoke", "f": "cas", "key": "k1", "value": [7, 8], "time": 40}
{"process": 3, "type": "fail", "f": "cas", "key": "k1", "value": [7, 8], "time": 50}
{"process": 4, "type": "invoke", "f": "write", "key": "k2", "value": 9, "time": 60}
"#;
        let ops = parse(text).expect("parses");
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[1].outcome, Outcome::Ok(Some(Some(7))));
        assert_eq!(ops[3].outcome, Outcome::Info);
        // A cas that saw 7 cannot fail when 7 is there: not linearizable.
        assert!(matches!(
            crate::check(&ops, &crate::Limits::default()).verdict,
            crate::Verdict::NotLinearizable { .. }
        ));
        let mut out = String::new();
        write(&ops, &mut out);
        assert_eq!(parse(&out).expect("re-parses"), ops);
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases = [
            ("not json", 1),
            (
                r#"{"process": 1, "type": "ok", "f": "read", "key": "k", "value": 1, "time": 5}"#,
                1,
            ),
            (
                "{\"process\": 1, \"type\": \"invoke\", \"f\": \"read\", \"key\": \"k\", \"time\": 5}\n{\"process\": 1, \"type\": \"invoke\", \"f\": \"read\", \"key\": \"k\", \"time\": 6}",
                2,
            ),
            (
                r#"{"process": 1, "type": "invoke", "f": "cas", "key": "k", "value": 3, "time": 5}"#,
                1,
            ),
            (
                r#"{"process": 1, "type": "invoke", "f": "frob", "key": "k", "time": 5}"#,
                1,
            ),
        ];
        for (text, line) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
        }
    }
}
