//! Message-by-message descriptions, for a person who knows Paxos.

use paxos::multi::{Envelope, Message, Value};

/// A value in a few characters: `noop` or the commands it carries.
pub fn short_value(value: &Value) -> String {
    match value {
        Value::Noop => "noop".into(),
        Value::Batch(commands) => {
            let parts: Vec<String> = commands
                .iter()
                .take(4)
                .map(|c| format!("c{}#{}", c.client, c.seq))
                .collect();
            let more = commands.len().saturating_sub(4);
            if more > 0 {
                format!("[{} +{more}]", parts.join(" "))
            } else {
                format!("[{}]", parts.join(" "))
            }
        }
        Value::Reconfigure(change) => format!(
            "reconfigure(voters {:?}, learners {:?})",
            change.membership.voters, change.membership.learners
        ),
    }
}

/// One line for one message on the wire.
pub fn describe(envelope: &Envelope) -> String {
    let body = match &envelope.message {
        Message::Prepare { ballot, first_slot } => {
            format!("Prepare(ballot {ballot}, slots {first_slot}..)")
        }
        Message::Promise {
            ballot,
            accepted,
            snapshot_slot,
        } => {
            let entries: Vec<String> = accepted
                .iter()
                .take(6)
                .map(|e| format!("{}:{}@{}", e.slot, short_value(&e.value), e.ballot))
                .collect();
            let more = accepted.len().saturating_sub(6);
            let more = if more > 0 {
                format!(" +{more}")
            } else {
                String::new()
            };
            let snap = if *snapshot_slot > 0 {
                format!(", snapshot ..{snapshot_slot}")
            } else {
                String::new()
            };
            format!(
                "Promise(ballot {ballot}, accepted {{{}{more}}}{snap})",
                entries.join(", ")
            )
        }
        Message::Accept {
            ballot,
            slot,
            value,
        } => format!(
            "Accept(ballot {ballot}, slot {slot}, {})",
            short_value(value)
        ),
        Message::Accepted { ballot, slot } => format!("Accepted(ballot {ballot}, slot {slot})"),
        Message::Nack { ballot, higher } => format!("Nack(ballot {ballot}, promised {higher})"),
        Message::Commit { slot, value } => format!("Commit(slot {slot}, {})", short_value(value)),
        Message::Chosen { ballot, slot } => format!("Chosen(slot {slot} at {ballot})"),
        Message::Heartbeat {
            ballot,
            commit_index,
            round,
        } => format!("Heartbeat(ballot {ballot}, committed ..{commit_index}, round {round})"),
        Message::HeartbeatAck {
            ballot,
            round,
            commit_index,
        } => {
            format!("HeartbeatAck(ballot {ballot}, round {round}, commit {commit_index})")
        }
        Message::CatchUp { from } => format!("CatchUp(slots {from}..)"),
    };
    format!("n{} -> n{}  {body}", envelope.from, envelope.to)
}
