//! The server's events (`GET /event`), typed: the fields ocx acts on, the rest ignored. A field
//! the server renames fails here, in one place, in the unit tests that parse the events recorded
//! from opencode 1.18.33 (`tests/fixtures/events`). Event types ocx does not know are `Other`.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", content = "properties")]
pub enum Event {
    #[serde(rename = "server.connected")]
    Connected {},
    /// Every 10 s, on every stream.
    #[serde(rename = "server.heartbeat")]
    Heartbeat {},
    #[serde(rename = "session.status")]
    SessionStatus {
        #[serde(rename = "sessionID")]
        session: String,
        status: Status,
    },
    #[serde(rename = "session.idle")]
    SessionIdle {
        #[serde(rename = "sessionID")]
        session: String,
    },
    #[serde(rename = "session.error")]
    SessionError {
        #[serde(rename = "sessionID", default)]
        session: Option<String>,
        #[serde(default)]
        error: Option<ErrorInfo>,
    },
    #[serde(rename = "session.created")]
    SessionCreated { info: SessionInfo },
    #[serde(rename = "session.updated")]
    SessionUpdated { info: SessionInfo },
    #[serde(rename = "message.updated")]
    MessageUpdated { info: MessageInfo },
    #[serde(rename = "message.part.updated")]
    PartUpdated { part: Part },
    #[serde(rename = "message.part.delta")]
    PartDelta {
        #[serde(rename = "sessionID")]
        session: String,
        #[serde(rename = "messageID")]
        message: String,
        #[serde(rename = "partID")]
        part: String,
        field: String,
        delta: String,
    },
    #[serde(rename = "permission.asked")]
    PermissionAsked(Permission),
    #[serde(rename = "permission.replied")]
    PermissionReplied {
        #[serde(rename = "sessionID")]
        session: String,
        #[serde(rename = "requestID")]
        request: String,
        reply: String,
    },
    #[serde(rename = "question.asked")]
    QuestionAsked(Question),
    #[serde(rename = "question.replied")]
    QuestionReplied {
        #[serde(rename = "sessionID")]
        session: String,
        #[serde(rename = "requestID")]
        request: String,
        answers: Vec<Vec<String>>,
    },
    #[serde(rename = "question.rejected")]
    QuestionRejected {
        #[serde(rename = "sessionID")]
        session: String,
        #[serde(rename = "requestID")]
        request: String,
    },
    #[serde(other)]
    Other,
}

/// What a session is doing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Status {
    Idle,
    Busy,
    /// The model failed; the server tries again at `next` (ms since the epoch).
    Retry {
        attempt: u64,
        #[serde(default)]
        message: String,
        #[serde(default)]
        next: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorInfo {
    pub name: String,
    #[serde(default)]
    pub data: Option<Value>,
}

impl ErrorInfo {
    /// The error's message, else its name.
    pub fn message(&self) -> String {
        self.data.as_ref().and_then(|d| d["message"].as_str()).map_or_else(|| self.name.clone(), str::to_string)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SessionInfo {
    pub id: String,
    #[serde(rename = "parentID", default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MessageInfo {
    pub id: String,
    #[serde(rename = "sessionID")]
    pub session: String,
    pub role: String,
    #[serde(rename = "parentID", default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub tokens: Option<Tokens>,
    #[serde(default)]
    pub finish: Option<String>,
    #[serde(default)]
    pub time: MessageTime,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageTime {
    #[serde(default)]
    pub completed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Tokens {
    #[serde(default)]
    pub input: u64,
    #[serde(default)]
    pub output: u64,
}

/// A part of a message: the ids every part carries, and what kind of part it is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Part {
    #[serde(flatten)]
    pub ids: PartIds,
    #[serde(flatten)]
    pub kind: PartKind,
}

/// Which part, of which message, of which session.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PartIds {
    pub id: String,
    #[serde(rename = "messageID")]
    pub message: String,
    #[serde(rename = "sessionID")]
    pub session: String,
}

/// The kinds of part ocx acts on; the others are `Other`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type")]
pub enum PartKind {
    #[serde(rename = "text")]
    Text {
        #[serde(default)]
        text: String,
        #[serde(default)]
        time: PartTime,
    },
    #[serde(rename = "tool")]
    Tool { tool: String, state: ToolState },
    #[serde(rename = "step-start")]
    StepStart {},
    #[serde(rename = "step-finish")]
    StepFinish {
        #[serde(default)]
        tokens: Option<Tokens>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PartTime {
    #[serde(default)]
    pub end: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ToolState {
    /// `pending`, `running`, `completed` or `error`.
    pub status: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub error: Option<String>,
}

/// The server waits for a user's yes or no to a tool call (`"permission": {"bash": "ask"}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Permission {
    pub id: String,
    #[serde(rename = "sessionID")]
    pub session: String,
    /// The tool's permission: `bash`, `edit`, …
    pub permission: String,
    /// What it wants to do, such as the command.
    #[serde(default)]
    pub patterns: Vec<String>,
}

/// The agent's question tool waits for the user to pick an answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Question {
    pub id: String,
    #[serde(rename = "sessionID")]
    pub session: String,
    pub questions: Vec<QuestionInfo>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuestionInfo {
    pub question: String,
    #[serde(default)]
    pub options: Vec<QuestionOption>,
    #[serde(default)]
    pub multiple: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuestionOption {
    pub label: String,
    #[serde(default)]
    pub description: String,
}

impl Event {
    /// The typed event; an error names what did not fit.
    pub fn parse(raw: &Value) -> Result<Event, serde_json::Error> {
        Event::deserialize(raw).or_else(|err| {
            // An event type ocx does not know comes with properties that `Other` cannot hold:
            // without them it is `Other`. A known type that does not fit keeps its error.
            let mut bare = raw.clone();
            if let Some(obj) = bare.as_object_mut() {
                obj.remove("properties");
            }
            match Event::deserialize(&bare) {
                Ok(Event::Other) => Ok(Event::Other),
                _ => Err(err),
            }
        })
    }

    /// The session the event is about, if it is about one.
    pub fn session(&self) -> Option<&str> {
        match self {
            Event::SessionStatus { session, .. }
            | Event::SessionIdle { session }
            | Event::PartDelta { session, .. }
            | Event::PermissionReplied { session, .. }
            | Event::QuestionReplied { session, .. }
            | Event::QuestionRejected { session, .. } => Some(session),
            Event::SessionError { session, .. } => session.as_deref(),
            Event::SessionCreated { info } | Event::SessionUpdated { info } => Some(&info.id),
            Event::MessageUpdated { info } => Some(&info.session),
            Event::PartUpdated { part } => Some(&part.ids.session),
            Event::PermissionAsked(p) => Some(&p.session),
            Event::QuestionAsked(q) => Some(&q.session),
            Event::Connected {} | Event::Heartbeat {} | Event::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(name: &str) -> Event {
        let path = format!("{}/tests/fixtures/events/{name}.json", env!("CARGO_MANIFEST_DIR"));
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        Event::parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn every_recorded_event_parses() {
        let dir = format!("{}/tests/fixtures/events", env!("CARGO_MANIFEST_DIR"));
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().trim_end_matches(".json").to_string();
            recorded(&name);
        }
    }

    #[test]
    fn recorded_events_carry_what_ocx_uses() {
        assert_eq!(recorded("server.connected"), Event::Connected {});
        assert_eq!(recorded("catalog.updated"), Event::Other);
        let Event::PermissionAsked(p) = recorded("permission.asked") else { panic!() };
        assert_eq!((p.permission.as_str(), p.patterns.as_slice()), ("bash", &["echo hi".to_string()][..]));
        assert!(p.id.starts_with("per_") && p.session.starts_with("ses_"));
        let Event::QuestionAsked(q) = recorded("question.asked") else { panic!() };
        assert_eq!(q.questions[0].question, "Pick one?");
        assert_eq!(q.questions[0].options.iter().map(|o| o.label.as_str()).collect::<Vec<_>>(), ["A", "B"]);
        assert!(matches!(recorded("session.status--busy"), Event::SessionStatus { status: Status::Busy, .. }));
        let Event::SessionError { error: Some(error), .. } = recorded("session.error") else { panic!() };
        assert_eq!((error.name.as_str(), error.message()), ("MessageAbortedError", "Aborted".to_string()));
        let Event::PartUpdated { part: Part { ids, kind: PartKind::Tool { tool, state } } } =
            recorded("message.part.updated--tool-bash-running")
        else {
            panic!()
        };
        assert!(ids.id.starts_with("prt_") && ids.message.starts_with("msg_") && ids.session.starts_with("ses_"));
        assert_eq!(
            (tool.as_str(), state.status.as_str(), &state.input["command"]),
            ("bash", "running", &"echo hi".into())
        );
        let Event::PartUpdated { part: Part { kind: PartKind::StepFinish { tokens: Some(t) }, .. } } =
            recorded("message.part.updated--step-finish")
        else {
            panic!()
        };
        assert_eq!((t.input, t.output), (10, 5));
        let Event::PartDelta { field, delta, .. } = recorded("message.part.delta") else { panic!() };
        assert_eq!((field.as_str(), delta.as_str()), ("text", "tool finished"));
        let Event::MessageUpdated { info } = recorded("message.updated--assistant-completed") else { panic!() };
        assert_eq!((info.role.as_str(), info.finish.as_deref()), ("assistant", Some("tool-calls")));
        assert!(info.time.completed.is_some() && info.parent.is_some());
    }

    #[test]
    fn a_renamed_field_fails_loudly() {
        let raw =
            serde_json::json!({"type": "permission.asked", "properties": {"requestID": "per_1", "sessionID": "s"}});
        let err = Event::parse(&raw).unwrap_err().to_string();
        assert!(err.contains("missing field `id`"), "{err}");
    }

    #[test]
    fn parts_share_one_set_of_ids_whatever_their_kind() {
        let Event::PartUpdated { part } = recorded("message.part.updated--text-final") else { panic!() };
        let PartKind::Text { text, time } = &part.kind else { panic!("{part:?}") };
        assert!(!text.is_empty() && time.end.is_some());
        assert!(part.ids.id.starts_with("prt_") && part.ids.message.starts_with("msg_"));
        assert_eq!(Event::PartUpdated { part: part.clone() }.session(), Some(part.ids.session.as_str()));
        assert!(matches!(
            recorded("message.part.updated--step-start"),
            Event::PartUpdated { part: Part { kind: PartKind::StepStart {}, .. } }
        ));
        // A kind ocx does not know still has its ids; a part without them fails loudly.
        let ids = serde_json::json!({"id": "prt_1", "messageID": "msg_1", "sessionID": "ses_1"});
        let mut reasoning = ids.clone();
        reasoning["type"] = "reasoning".into();
        reasoning["text"] = "hm".into();
        let part: Part = serde_json::from_value(reasoning).unwrap();
        assert_eq!((part.kind, part.ids.session.as_str()), (PartKind::Other, "ses_1"));
        let err = serde_json::from_value::<Part>(serde_json::json!({"id": "p", "sessionID": "s", "type": "text"}));
        assert!(err.unwrap_err().to_string().contains("missing field `messageID`"));
    }
}
