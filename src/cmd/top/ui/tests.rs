//! The layout at a small and a large terminal, drawn on ratatui's test backend.

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::super::app::{Action, App};
use super::super::data::{Row, Snapshot};
use super::super::detail::{Pending, Update};
use super::draw;

fn row(id: &str, name: Option<&str>, status: &str, started: &str) -> Row {
    Row {
        id: id.into(),
        name: name.map(str::to_string),
        status: status.into(),
        status_text: status.into(),
        activity: "idle".into(),
        restarts: 1,
        restarts_text: "1 (SIGKILL, 3s ago)".into(),
        uptime: "9s".into(),
        mem: "315M".into(),
        cpu: "2%".into(),
        pid: "29181".into(),
        url: "http://127.0.0.1:10993".into(),
        place: "/tmp/demo/proj".into(),
        started_at: started.into(),
        record: Some(serde_json::from_str(include_str!("../../../../tests/fixtures/record-v1-full.json")).unwrap()),
        ..Row::default()
    }
}

fn app(rows: usize) -> App {
    let mut app = App::new(false, false);
    let rows = (0..rows)
        .map(|n| {
            row(&format!("id{n:04}"), (n % 2 == 0).then_some(&*format!("agent-{n}")), "running", &format!("{n:04}"))
        })
        .collect();
    app.update(Snapshot { host: None, rows });
    app.detail(Update::Lines((0..100).map(|n| format!("10:02:{n:02}.000  agent-0  ses_x  line {n}")).collect()));
    app
}

/// The screen as text, one string per line.
fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect::<String>().trim_end().to_string())
        .collect()
}

fn has(screen: &[String], text: &str) -> bool {
    screen.iter().any(|l| l.contains(text))
}

#[test]
fn at_80_by_24_everything_fits() {
    let mut app = app(2);
    app.detail(Update::Pending(vec![Pending { id: "per_1".into(), what: "permission bash (rm x)".into() }]));
    let s = screen(&app, 80, 24);
    assert_eq!(s.len(), 24);
    assert!(s[0].starts_with("ocx top  2 instances"), "{s:#?}");
    for header in ["NAME", "STATUS", "ACTIVITY", "RST", "UPTIME", "MEM", "CPU", "DIR"] {
        assert!(s[1].contains(header), "{header} missing: {s:#?}");
    }
    // The selected row is marked; narrow: no id or URL columns.
    assert!(s[2].starts_with("> agent-0") && s[2].contains("running") && s[2].contains("/tmp/demo/proj"), "{s:#?}");
    assert!(s[3].contains("id0001") && !has(&s, "http://"), "{s:#?}");
    // The detail: what is pending first, then the newest lines, the last one at the bottom.
    assert!(s[4].contains("events · agent-0"), "{s:#?}");
    assert!(s[5].contains("waiting 0s: permission bash (rm x)"), "{s:#?}");
    assert!(s[21].contains("line 99") && !has(&s, "line 83"), "{s:#?}");
    // The keys, whole, in the last line.
    assert!(s[23].starts_with("↑↓ select") && s[23].ends_with("q quit"), "{s:#?}");
    assert!(s.iter().all(|l| l.chars().count() <= 80));
}

#[test]
fn at_200_by_50_the_table_shows_more() {
    let app = app(30);
    let s = screen(&app, 200, 50);
    for header in ["ID", "NAME", "PID", "RESTARTS", "URL", "DIR"] {
        assert!(s[1].contains(header), "{header} missing: {s:#?}");
    }
    assert!(s[2].contains("1 (SIGKILL, 3s ago)") && s[2].contains("http://127.0.0.1:10993"), "{s:#?}");
    // Half the height for the table (its header and 23 rows), the rest for the detail.
    assert!(s[24].contains("id0022") && !has(&s, "id0023"), "{s:#?}");
    assert!(s[25].contains("events · agent-0"), "{s:#?}");
    assert!(s[47].contains("line 99") && s[48].starts_with("└"), "{s:#?}");
}

#[test]
fn many_rows_scroll_to_keep_the_selection_in_view() {
    let mut app = app(30);
    for _ in 0..25 {
        app.key(ratatui::crossterm::event::KeyCode::Char('j').into());
    }
    let s = screen(&app, 80, 24);
    assert!(s.iter().any(|l| l.starts_with("> id0025")), "{s:#?}");
}

#[test]
fn the_footer_asks_before_an_action_and_the_help_lists_every_key() {
    let mut app = app(2);
    app.key(ratatui::crossterm::event::KeyCode::Char('s').into());
    assert!(matches!(app.confirm, Some((Action::Stop, _))));
    let s = screen(&app, 80, 24);
    assert_eq!(s[23], "stop agent-0? y/n", "{s:#?}");
    app.key(ratatui::crossterm::event::KeyCode::Char('n').into());
    assert!(app.confirm.is_none());
    app.key(ratatui::crossterm::event::KeyCode::Char('?').into());
    let s = screen(&app, 80, 24);
    for key in ["j/k", "Enter, e", "restart it", "stop it", "attach", "filter", "q, Esc"] {
        assert!(has(&s, key), "{key} missing from the help: {s:#?}");
    }
}

#[test]
fn a_filter_keeps_matching_rows_and_colour_only_when_asked() {
    let mut app = app(4);
    for c in "/agent-2".chars() {
        app.key(ratatui::crossterm::event::KeyCode::Char(c).into());
    }
    let s = screen(&app, 80, 24);
    assert!(s[0].contains("1 instance matching /agent-2") && s[2].starts_with("> agent-2"), "{s:#?}");
    // Without colour no cell has a colour; with it the status is green.
    let colours = |app: &App| {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        terminal.backend().buffer().content().iter().filter(|c| c.fg != ratatui::style::Color::Reset).count()
    };
    assert_eq!(colours(&app), 0);
    app.color = true;
    assert!(colours(&app) > 0);
}
