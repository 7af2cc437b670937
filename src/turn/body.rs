//! A prompt as the server's API takes it: its text, attached files (as file URLs, with the
//! MIME type opencode reads them by), the optional model and agent; and a new session's title.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

use crate::error::{Failure, code};

/// What a prompt is made of, as `ocx run`'s flags (or a batch task's fields) give it.
#[derive(Debug, Clone, Default)]
pub struct Prompt {
    pub text: String,
    pub files: Vec<PathBuf>,
    /// PROVIDER/MODEL.
    pub model: Option<String>,
    pub agent: Option<String>,
}

/// `PROVIDER/MODEL`, split; a usage error otherwise.
pub fn split_model(model: &str) -> Result<(&str, &str)> {
    model
        .split_once('/')
        .filter(|(p, m)| !p.is_empty() && !m.is_empty())
        .ok_or_else(|| anyhow!(Failure::new(code::USAGE, format!("--model {model:?} is not PROVIDER/MODEL"))))
}

impl Prompt {
    /// The request body of `prompt_async`; fails on a file that cannot be read.
    pub fn body(&self) -> Result<Value> {
        let mut parts = vec![json!({"type": "text", "text": self.text})];
        for file in &self.files {
            let path = dunce::canonicalize(file).with_context(|| format!("cannot read --file {}", file.display()))?;
            parts.push(json!({
                "type": "file",
                "mime": mime_of(&path),
                "url": file_url(&path)?,
                "filename": path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            }));
        }
        let mut body = json!({ "parts": parts });
        if let Some(model) = &self.model {
            let (provider, model) = split_model(model)?;
            body["model"] = json!({"providerID": provider, "modelID": model});
        }
        if let Some(agent) = &self.agent {
            body["agent"] = agent.as_str().into();
        }
        Ok(body)
    }
}

/// The MIME type opencode is told a `--file` has. opencode reads a `text/plain` file with its
/// Read tool and attaches a file of any other type raw, so only what models take as an
/// attachment (the images and PDFs opencode itself attaches) keeps its guessed type: source,
/// JSON, Markdown and the rest are read as text.
fn mime_of(path: &Path) -> &'static str {
    const ATTACHED: [&str; 5] = ["image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"];
    if path.is_dir() {
        return "application/x-directory";
    }
    mime_guess::from_path(path).first_raw().filter(|mime| ATTACHED.contains(mime)).unwrap_or("text/plain")
}

/// What a path keeps unescaped in a file URL: RFC 3986's unreserved characters, `/` and the
/// `:` of a Windows drive.
const PATH_CHARS: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/').remove(b':');

/// `file://` URL of an absolute path, as opencode turns it back into one (`fileURLToPath`).
/// (The `url` crate would do it too, but brings 27 crates and 5 MB of Unicode tables into the
/// binary for this one call.)
fn file_url(path: &Path) -> Result<String> {
    let text = path.to_string_lossy().replace('\\', "/");
    let slash = if text.starts_with('/') { "" } else { "/" };
    Ok(format!("file://{slash}{}", percent_encoding::utf8_percent_encode(&text, PATH_CHARS)))
}

/// The prompt's first line, cut at a word boundary near 60 characters.
pub fn default_title(prompt: &str) -> String {
    let line = prompt.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() <= 60 {
        return line.to_string();
    }
    let cut: String = line.chars().take(60).collect();
    match cut.rfind(' ') {
        Some(i) if i > 20 => format!("{}…", &cut[..i]),
        _ => format!("{cut}…"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_urls() {
        assert_eq!(default_title("  fix the bug\nand more"), "fix the bug");
        let long = "word ".repeat(30);
        assert!(default_title(&long).chars().count() <= 61);
        // Not an absolute path on Windows (no drive): the path below is checked everywhere.
        let unix = Path::new("/tmp/a b.txt");
        if unix.is_absolute() {
            assert_eq!(file_url(unix).unwrap(), "file:///tmp/a%20b.txt");
        }
        let path = std::env::temp_dir().join("a b#1%.txt");
        let url = file_url(&path).unwrap();
        assert!(url.starts_with("file:///") && url.ends_with("/a%20b%231%25.txt"), "{url}");
        let back = percent_encoding::percent_decode_str(url.trim_start_matches("file://")).decode_utf8().unwrap();
        assert!(back.ends_with("/a b#1%.txt"), "{back}");
    }

    #[test]
    fn mime_types_opencode_attaches_and_text_for_the_rest() {
        for (name, mime) in [
            ("shot.PNG", "image/png"),
            ("photo.jpg", "image/jpeg"),
            ("photo.jpeg", "image/jpeg"),
            ("anim.gif", "image/gif"),
            ("pic.webp", "image/webp"),
            ("paper.pdf", "application/pdf"),
            ("main.rs", "text/plain"),
            ("data.json", "text/plain"),
            ("README.md", "text/plain"),
            ("Makefile", "text/plain"),
        ] {
            assert_eq!(mime_of(Path::new(name)), mime, "{name}");
        }
        assert_eq!(mime_of(&std::env::temp_dir()), "application/x-directory");
    }
}
