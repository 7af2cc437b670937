//! Is a model configured for a directory? Asked of a server that serves it, when one is running
//! (what it resolved is the truth: every config file, `opencode auth login`, API keys in its
//! environment); else read from opencode's own config files, as opencode merges them. Starting a
//! server just to ask would take seconds and write opencode's database: doctor changes nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::Check;
use crate::home::Home;
use crate::instance::{self, state};
use crate::record;

/// The check's name.
const NAME: &str = "model";
/// The provider every opencode has (OpenCode Zen's free models, which need the network); it
/// alone does not count as configured.
const BUILT_IN: &str = "opencode";
/// API keys opencode picks providers up by, besides `opencode auth login`.
const KEY_VARS: &[&str] = &[
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_GENERATIVE_AI_API_KEY",
    "OPENROUTER_API_KEY",
    "GROQ_API_KEY",
    "XAI_API_KEY",
    "DEEPSEEK_API_KEY",
    "MISTRAL_API_KEY",
    "OPENCODE_API_KEY",
];
const HINT: &str = "set \"model\": \"PROVIDER/MODEL\" in the project's opencode.json (or \
                    ~/.config/opencode/opencode.json), or log in to a provider with `opencode auth login`";

/// The model check for `dir`.
pub fn check(home: Option<&Home>, dir: &Path) -> Check {
    let dir = dunce::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if let Some(check) = home.and_then(|home| ask_server(home, &dir)) {
        return check;
    }
    from_files(&dir)
}

/// Ask a running instance that serves `dir`: `/config` for `model`, else `/config/providers`.
fn ask_server(home: &Home, dir: &Path) -> Option<Check> {
    let records: Vec<_> =
        record::valid(&record::list(home).ok()?).into_iter().filter(|r| r.remote.is_none() && r.dir == dir).collect();
    let facts = state::Facts::of_all(home, &records).ok()?;
    let now = SystemTime::now();
    let record = records.iter().zip(&facts).find_map(|(r, f)| {
        matches!(state::classify(r, f, now), state::Status::Running | state::Status::Unsupervised).then_some(r)
    })?;
    let client = instance::client(record, Duration::from_secs(5));
    let asked = format!("asked instance {}", record.label());
    let config = client.config().ok()?;
    if let Some(model) = config["model"].as_str() {
        return Some(Check::pass(NAME, true, format!("{model} for {} ({asked})", dir.display())));
    }
    let providers = client.providers().ok()?;
    let usable = providers_of(&providers);
    Some(match usable.is_empty() {
        false => Check::pass(
            NAME,
            true,
            format!("no model set; the server picks a default of {} ({asked})", usable.join(", ")),
        ),
        true => Check::fail(
            NAME,
            true,
            format!("no model set for {} and no provider but OpenCode Zen's free models ({asked})", dir.display()),
            HINT,
        ),
    })
}

/// The providers of a `/config/providers` answer other than the built-in one.
fn providers_of(answer: &Value) -> Vec<String> {
    let list = answer["providers"].as_array().map(Vec::as_slice).unwrap_or_default();
    list.iter().filter_map(|p| p["id"].as_str()).filter(|id| *id != BUILT_IN).map(str::to_string).collect()
}

/// opencode's config files for `dir`, from the lowest precedence to the highest: the global ones,
/// `$OPENCODE_CONFIG`, then the project's from its top (the git worktree's root, else `/`)
/// down to `dir`. (`$OPENCODE_CONFIG_CONTENT` comes last of all.)
fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(global) = config_home().map(|c| c.join("opencode")) {
        files.extend(["config.json", "opencode.json", "opencode.jsonc"].map(|f| global.join(f)));
    }
    if let Some(path) = std::env::var_os("OPENCODE_CONFIG").filter(|p| !p.is_empty()) {
        files.push(PathBuf::from(path));
    }
    let mut project = Vec::new();
    for up in dir.ancestors() {
        let here = ["opencode.jsonc", "opencode.json", ".opencode/opencode.jsonc", ".opencode/opencode.json"];
        project.extend(here.iter().rev().map(|f| up.join(f)));
        if up.join(".git").exists() {
            break;
        }
    }
    project.reverse();
    files.extend(project);
    files
}

/// opencode's config directory: `$XDG_CONFIG_HOME`, else `~/.config` (on every platform).
fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".config")))
}

/// opencode's data directory, where `opencode auth login` keeps `auth.json`.
fn data_home() -> Option<PathBuf> {
    std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::home_dir().map(|h| h.join(".local").join("share")))
}

/// Read opencode's config files: the `model` of the one with the highest precedence that sets
/// it; else a provider logged in to or with an API key in the environment.
fn from_files(dir: &Path) -> Check {
    let mut model: Option<(String, String)> = None;
    for file in config_files(dir) {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        match parse(&text) {
            Ok(config) => {
                if let Some(m) = config["model"].as_str() {
                    model = Some((m.to_string(), file.display().to_string()));
                }
            }
            Err(err) => {
                return Check::fail(
                    NAME,
                    true,
                    format!("{} does not parse: {err}", file.display()),
                    "fix it: opencode refuses to start with it",
                );
            }
        }
    }
    if let Some(inline) = std::env::var("OPENCODE_CONFIG_CONTENT").ok().filter(|s| !s.trim().is_empty())
        && let Ok(config) = parse(&inline)
        && let Some(m) = config["model"].as_str()
    {
        model = Some((m.to_string(), "OPENCODE_CONFIG_CONTENT".into()));
    }
    if let Some((model, from)) = model {
        return Check::pass(NAME, true, format!("{model} for {} (from {from})", dir.display()));
    }
    let auth = data_home().map(|d| d.join("opencode").join("auth.json"));
    let logged_in: Vec<String> = auth
        .and_then(|path| std::fs::read(path).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes).ok())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if !logged_in.is_empty() {
        return Check::pass(
            NAME,
            true,
            format!(
                "no model set; opencode picks a default of {} (logged in with `opencode auth login`)",
                logged_in.join(", ")
            ),
        );
    }
    let keys: Vec<&str> =
        KEY_VARS.iter().copied().filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty())).collect();
    if !keys.is_empty() {
        return Check::pass(
            NAME,
            true,
            format!("no model set; opencode picks a default of the provider of {}", keys.join(", ")),
        );
    }
    Check::fail(
        NAME,
        true,
        format!("no model set for {} in opencode's config files, and no provider logged in to", dir.display()),
        HINT,
    )
}

/// A config file: JSON with comments and trailing commas, as opencode reads it.
fn parse(text: &str) -> Result<Value, String> {
    let value: Option<Value> =
        jsonc_parser::parse_to_serde_value(text, &Default::default()).map_err(|e| e.to_string())?;
    Ok(value.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_go_from_the_global_ones_to_the_project_nearest_last() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("repo");
        let sub = repo.join("sub");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        let files = config_files(&sub);
        let last = files.last().unwrap();
        // Within one directory as opencode reads them: .jsonc, .json, then `.opencode/`.
        assert_eq!(last, &sub.join(".opencode/opencode.json"), "{files:?}");
        // Nothing above the worktree's root is read.
        assert!(files.iter().all(|f| !f.starts_with(root.path()) || f.starts_with(&repo)), "{files:?}");
        let at = |f: PathBuf| files.iter().position(|g| g == &f).unwrap();
        assert!(at(repo.join("opencode.json")) < at(sub.join("opencode.jsonc")));
        assert!(at(sub.join("opencode.jsonc")) < at(sub.join("opencode.json")));
    }

    #[test]
    fn jsonc_with_comments_parses_and_the_built_in_provider_does_not_count() {
        let config = parse("{\n  // the model\n  \"model\": \"fake/fake\",\n}\n").unwrap();
        assert_eq!(config["model"], "fake/fake");
        assert!(parse("{ nope").is_err());
        let answer = serde_json::json!({"providers": [{"id": "opencode"}, {"id": "fake"}]});
        assert_eq!(providers_of(&answer), vec!["fake".to_string()]);
    }
}
