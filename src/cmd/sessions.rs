//! `ocx sessions`: an instance's sessions, newest first, with what each is doing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::SessionsArgs;
use crate::home::Home;
use crate::{instance, output, parallel, record};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(home: &Home, args: SessionsArgs) -> Result<()> {
    let records = record::valid(&record::list(home)?);
    let r = instance::resolve::resolve_default(&records, args.instance.as_deref())?;
    let r = &instance::serving::wait_serving(home, r, None)?;
    let client = instance::client(r, REQUEST_TIMEOUT);
    let mut sessions = client.sessions()?;
    sessions.sort_by_key(|s| std::cmp::Reverse(s["time"]["updated"].as_u64().unwrap_or(0)));
    let activity = instance::observe::activity(&client)?;
    // The session list has no message count: one request each, a few at a time, each counted
    // as it streams in (a long session's messages pass 10 MB).
    let counts = parallel::map(&sessions, 8, |s| s["id"].as_str().and_then(|id| client.message_count(id).ok()));
    let rows: Vec<Value> = sessions
        .iter()
        .zip(counts)
        .map(|(s, messages)| {
            let id = s["id"].as_str().unwrap_or_default();
            let status = match activity.busy.get(id) {
                Some(_) if activity.asking.contains(id) => "asking",
                Some(status) => status["type"].as_str().unwrap_or("busy"),
                None => "idle",
            };
            json!({
                "id": id,
                "title": s["title"],
                "status": status,
                "created": time(&s["time"]["created"]),
                "updated": time(&s["time"]["updated"]),
                "messages": messages,
                "parentID": s["parentID"],
            })
        })
        .collect();
    if args.json {
        return Ok(output::print_json(&Value::Array(rows))?);
    }
    let mut table = output::table(["ID", "TITLE", "STATUS", "MESSAGES", "CREATED", "UPDATED"]);
    for (row, s) in rows.iter().zip(&sessions) {
        let title = row["title"].as_str().unwrap_or("");
        let title = output::cut(title, 40);
        table.add_row([
            row["id"].as_str().unwrap_or(""),
            &title,
            row["status"].as_str().unwrap_or(""),
            &row["messages"].as_u64().map_or("-".into(), |n| n.to_string()),
            &ago(&s["time"]["created"]),
            &ago(&s["time"]["updated"]),
        ]);
    }
    Ok(output::print_table(&mut table)?)
}

/// A time in ms since the epoch, as RFC 3339.
fn time(ms: &Value) -> Value {
    ms.as_u64()
        .map(|ms| humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string().into())
        .unwrap_or(Value::Null)
}

/// `3m12s ago`.
fn ago(ms: &Value) -> String {
    ms.as_u64()
        .and_then(|ms| SystemTime::now().duration_since(UNIX_EPOCH + Duration::from_millis(ms)).ok())
        .map_or("-".into(), |d| format!("{} ago", output::duration(d)))
}
