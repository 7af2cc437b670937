//! Drawing: a function of the state alone (`draw(frame, &App)`), no I/O. The table on top,
//! the selected instance's detail below, keys in the footer; columns by the terminal's width.

use std::time::Instant;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, HighlightSpacing, Paragraph, Row as TableRow, Table, TableState};

use super::app::App;
use super::data::Row;
use super::detail::View;
use crate::output;

/// From this width on, the table shows ids, PIDs, URLs and why the last restart came.
const WIDE: u16 = 120;

const KEYS: &str = "↑↓ select  e/l events/log  r restart  s stop  a attach  / filter  ? help  q quit";

const HELP: [&str; 11] = [
    "↑/↓, j/k     select an instance (g/G: first/last)",
    "Enter, e     its live events (as `ocx events`)",
    "l            its log (as `ocx logs -f`)",
    "r            restart it (asks y/n; waits for busy sessions)",
    "s            stop it (asks y/n)",
    "a            attach: `ocx attach`, back here when it exits",
    "/            filter by name or id (Enter keeps, Esc clears)",
    "?            this help",
    "q, Esc       quit (Ctrl-C too)",
    "",
    "any key closes this help",
];

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let rows = app.rows();
    let table_height = (rows.len() as u16 + 1).clamp(2, (area.height.saturating_sub(2) / 2).max(2));
    let [title, table, detail, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(table_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, app, rows.len(), title);
    draw_table(frame, app, &rows, table);
    draw_detail(frame, app, detail);
    draw_footer(frame, app, footer);
    if app.help {
        draw_help(frame, area);
    }
}

fn style(app: &App, style: Style) -> Style {
    if app.color { style } else { Style::default() }
}

fn draw_title(frame: &mut Frame, app: &App, count: usize, area: Rect) {
    let filter = if app.filter.is_empty() { String::new() } else { format!(" matching /{}", app.filter) };
    let mut spans = vec![Span::styled("ocx top", Style::default().add_modifier(Modifier::BOLD))];
    spans.push(Span::raw(format!("  {count} instance{}{filter}", if count == 1 { "" } else { "s" })));
    if let Some(message) = &app.message {
        spans.push(Span::raw("  ·  "));
        spans.push(Span::styled(message.clone(), style(app, Style::default().fg(Color::Cyan))));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn status_color(status: &str) -> Color {
    match status {
        "running" => Color::Green,
        "starting" | "stopping" | "restarting" | "unsupervised" => Color::Yellow,
        _ => Color::Red,
    }
}

fn draw_table(frame: &mut Frame, app: &App, rows: &[&Row], area: Rect) {
    let wide = area.width >= WIDE;
    let mut header: Vec<&str> = Vec::new();
    let mut widths: Vec<Constraint> = Vec::new();
    let mut column = |name: &'static str, width: Constraint| {
        header.push(name);
        widths.push(width);
    };
    if app.hosts {
        column("HOST", Constraint::Length(10));
    }
    if wide {
        column("ID", Constraint::Length(6));
        column("NAME", Constraint::Length(12));
    } else {
        column("NAME", Constraint::Length(10));
    }
    column("STATUS", Constraint::Length(if wide { 20 } else { 12 }));
    column("ACTIVITY", Constraint::Length(8));
    if wide {
        column("PID", Constraint::Length(7));
        column("RESTARTS", Constraint::Length(22));
    } else {
        column("RST", Constraint::Length(3));
    }
    column("UPTIME", Constraint::Length(7));
    column("MEM", Constraint::Length(5));
    column("CPU", Constraint::Length(4));
    if wide {
        column("URL", Constraint::Length(22));
    }
    // Where a worktree instance's branch will go, once records carry it.
    column("DIR", Constraint::Fill(1));

    let lines = rows.iter().map(|r| {
        let mut cells: Vec<Cell> = Vec::new();
        if app.hosts {
            cells.push(Cell::from(r.host.clone().unwrap_or_else(|| "local".into())));
        }
        if wide {
            cells.push(Cell::from(r.id.clone()));
            cells.push(Cell::from(r.name.clone().unwrap_or_else(|| "-".into())));
        } else {
            cells.push(Cell::from(r.label().to_string()));
        }
        cells.push(Cell::from(r.status_text.clone()).style(style(app, Style::default().fg(status_color(&r.status)))));
        cells.push(Cell::from(r.activity.clone()));
        if wide {
            cells.push(Cell::from(r.pid.clone()));
            cells.push(Cell::from(r.restarts_text.clone()));
        } else {
            cells.push(Cell::from(r.restarts.to_string()));
        }
        cells.extend([r.uptime.clone(), r.mem.clone(), r.cpu.clone()].map(Cell::from));
        if wide {
            cells.push(Cell::from(r.url.clone()));
        }
        cells.push(Cell::from(r.place.clone()));
        TableRow::new(cells)
    });
    let table = Table::new(lines, widths)
        .header(TableRow::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        // A mark as well as the highlight: seen without colour, and in a plain capture.
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
    if rows.is_empty() {
        let hint = if app.filter.is_empty() { "no instances: `ocx start` starts one" } else { "no instance matches" };
        frame.render_widget(Paragraph::new(hint), Rect { y: area.y + 1, height: 1, ..area });
    }
}

fn draw_detail(frame: &mut Frame, app: &App, area: Rect) {
    let selected = app.selected_row();
    let view = match app.view {
        Some(View::Log) => "log",
        _ => "events",
    };
    let title = match selected {
        Some(r) => format!(" {view} · {} ", r.label()),
        None => format!(" {view} "),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let mut lines: Vec<Line> = Vec::new();
    let now = Instant::now();
    for (pending, since) in &app.pending {
        let waited = output::duration(now.duration_since(*since));
        lines.push(Line::styled(
            format!("waiting {waited}: {}", pending.what),
            style(app, Style::default().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
        ));
    }
    match selected {
        Some(r) if r.host.is_some() => lines.push(Line::raw(format!(
            "events and log of another host's instance: ocx --host {} events {}",
            r.host.as_deref().unwrap_or_default(),
            r.id
        ))),
        Some(r) if r.record.is_none() => lines.push(Line::raw(r.place.clone())),
        _ => {
            let room = (inner.height as usize).saturating_sub(lines.len());
            let skip = app.lines.len().saturating_sub(room);
            lines.extend(app.lines.iter().skip(skip).map(|l| Line::raw(l.clone())));
        }
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_footer(frame: &mut Frame, app: &App, area: Rect) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let line = if let Some((action, row)) = &app.confirm {
        Line::from(vec![Span::styled(format!("{} {}? ", action.verb(), row.label()), bold), Span::raw("y/n")])
    } else if app.filtering {
        Line::from(vec![Span::styled(format!("/{}", app.filter), bold), Span::raw("  Enter keep · Esc clear")])
    } else {
        Line::raw(KEYS)
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = 64.min(area.width);
    let height = (HELP.len() as u16 + 2).min(area.height);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(HELP.map(Line::raw).to_vec()).block(Block::bordered().title(" keys ")), popup);
}

#[cfg(test)]
mod tests;
