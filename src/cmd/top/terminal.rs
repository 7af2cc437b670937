//! The terminal, handed back as it was on every way out: one guard whose `Drop` leaves raw
//! mode and the alternate screen and shows the cursor, and a panic hook that does the same
//! before the panic's message is printed (which would otherwise vanish with the alternate screen).

use std::io::{self, Stdout};
use std::sync::Once;

use anyhow::{Context, Result};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};

/// The dashboard's terminal, in raw mode on the alternate screen while this lives.
pub struct Screen {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    pub fn enter() -> Result<Screen> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        // Made before the terminal is touched: a failure below is undone by its `Drop`.
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout())).context("cannot use the terminal")?;
        let screen = Screen { terminal };
        take_over().context("cannot put the terminal in raw mode")?;
        Ok(screen)
    }

    /// Hand the terminal back for a while (to `ocx attach`).
    pub fn suspend(&mut self) {
        restore();
    }

    /// Take it again, redrawing everything.
    pub fn resume(&mut self) -> Result<()> {
        take_over().context("cannot put the terminal in raw mode")?;
        self.terminal.clear().context("cannot draw")
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn take_over() -> io::Result<()> {
    enable_raw_mode()?;
    execute!(io::stdout(), EnterAlternateScreen, Hide)
}

/// Raw mode off, the alternate screen left, the cursor shown: each step whatever the others did.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
}
