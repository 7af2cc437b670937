use serde_json::{Value, json};

use super::{Item, MAX_SESSIONS, Printer};

fn printer() -> Printer {
    Printer::new(false, true, None)
}

fn event(kind: &str, properties: Value) -> Item {
    Item::Event(json!({"type": kind, "properties": properties}))
}

/// One turn of session `s`: busy, a permission asked, a tool call, half a line of text, the
/// message finished; idle at the end when `ends`. Each `round` has parts and messages of its own.
fn turn(printer: &mut Printer, s: &str, round: u32, ends: bool) -> Vec<String> {
    let msg = format!("msg_{s}_{round}");
    let ids = |id: &str| json!({"id": format!("{id}_{s}_{round}"), "messageID": msg, "sessionID": s});
    let mut tool = ids("prt_tool");
    tool["type"] = "tool".into();
    tool["tool"] = "bash".into();
    tool["state"] = json!({"status": "running", "input": {"command": "ls"}});
    let mut items = vec![
        event("session.status", json!({"sessionID": s, "status": {"type": "busy"}})),
        event("permission.asked", json!({"id": format!("per_{s}_{round}"), "sessionID": s, "permission": "bash"})),
        event("message.part.updated", json!({"part": tool})),
        event(
            "message.part.delta",
            json!({"sessionID": s, "messageID": msg, "partID": format!("prt_text_{s}_{round}"),
                   "field": "text", "delta": "half a line"}),
        ),
        event(
            "message.updated",
            json!({"info": {"id": msg, "sessionID": s, "role": "assistant", "time": {"completed": 1}}}),
        ),
    ];
    if ends {
        items.push(event("session.status", json!({"sessionID": s, "status": {"type": "idle"}})));
        items.push(event("session.idle", json!({"sessionID": s})));
    }
    items.into_iter().flat_map(|item| printer.lines("abc123", "api", item)).collect()
}

#[test]
fn what_a_printer_keeps_stays_bounded_over_many_sessions() {
    let mut printer = printer();
    for n in 0..2000 {
        // Every third session is left busy (its events stop coming, as a killed server's do).
        turn(&mut printer, &format!("ses_{n}"), 0, n % 3 != 0);
    }
    assert!(printer.sessions.len() <= MAX_SESSIONS, "{} sessions kept", printer.sessions.len());
    let (idle, busy): (Vec<_>, Vec<_>) = printer.sessions.values().partition(|s| s.status.as_deref() == Some("idle"));
    assert!(!idle.is_empty() && !busy.is_empty());
    for shown in idle {
        assert!(shown.tools.is_empty() && shown.asked.is_empty() && shown.finished.is_empty());
        assert!(shown.text_lines.is_empty());
    }
    // The sessions heard from last are the ones kept.
    assert!(printer.sessions.contains_key(&("abc123".to_string(), "ses_1999".to_string())));
    assert!(!printer.sessions.contains_key(&("abc123".to_string(), "ses_0".to_string())));
}

#[test]
fn forgetting_an_idle_session_still_says_each_change_once() {
    let mut printer = printer();
    let first = turn(&mut printer, "ses_a", 0, true);
    let said = |lines: &[String], what: &str| lines.iter().filter(|l| l.ends_with(what)).count();
    assert_eq!(said(&first, "ses_a  busy"), 1, "{first:#?}");
    assert_eq!(said(&first, "tool bash: ls (running)"), 1, "{first:#?}");
    assert_eq!(said(&first, "message finished"), 1, "{first:#?}");
    assert_eq!(said(&first, "ses_a  idle"), 1, "{first:#?}");
    // A status said again is not shown again, also once the session's turn is forgotten.
    let again = printer.lines(
        "abc123",
        "api",
        event("session.status", json!({"sessionID": "ses_a", "status": {"type": "idle"}})),
    );
    assert!(again.is_empty(), "{again:#?}");
    // The next turn is said in full.
    let next = turn(&mut printer, "ses_a", 1, false);
    assert_eq!(said(&next, "ses_a  busy"), 1, "{next:#?}");
    assert_eq!(said(&next, "message finished"), 1, "{next:#?}");
}
