//! The demo's live screen: the terminal's alternate screen redrawn in
//! place, and single key presses without Enter. Dropping the [`Screen`]
//! gives the terminal back as it was.

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use tokio::sync::mpsc;

/// Columns drawn when the terminal does not say how wide it is.
const DEFAULT_COLUMNS: usize = 80;

pub struct Screen {
    /// stdin's settings before keys were read one by one.
    stdin_before: Option<Termios>,
    /// Tells the key reader to stop.
    stop: Arc<AtomicBool>,
}

impl Screen {
    /// Takes over the terminal; `None` when stdout is not a terminal (the
    /// demo then prints plain lines). Keys are read only when stdin is a
    /// terminal too; they arrive on the returned channel.
    pub fn enter() -> Option<(Self, mpsc::UnboundedReceiver<u8>)> {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (keys_tx, keys) = mpsc::unbounded_channel();
        let stdin_before = read_keys_one_by_one(keys_tx, Arc::clone(&stop));
        // Alternate screen, cursor hidden.
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Some((Self { stdin_before, stop }, keys))
    }

    /// Draws `lines` from the top left, each cut to the terminal's width,
    /// and clears what an earlier, longer frame left below them.
    pub fn draw(&self, lines: &[String]) {
        let columns = termios::tcgetwinsize(std::io::stdout())
            .ok()
            .map_or(DEFAULT_COLUMNS, |size| usize::from(size.ws_col))
            .max(1);
        let mut frame = String::from("\x1b[H");
        for line in lines {
            frame.extend(line.chars().take(columns));
            // Clear the rest of the line; \r because keys are read raw.
            frame.push_str("\x1b[K\r\n");
        }
        frame.push_str("\x1b[J");
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(frame.as_bytes());
        let _ = stdout.flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(before) = &self.stdin_before {
            let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, before);
        }
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
    }
}

/// Switches stdin to unbuffered, silent reads (Ctrl-C still interrupts)
/// and starts a thread passing each byte typed to `keys`. Returns the
/// settings to restore, or `None` when stdin is not a terminal.
fn read_keys_one_by_one(keys: mpsc::UnboundedSender<u8>, stop: Arc<AtomicBool>) -> Option<Termios> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let before = termios::tcgetattr(&stdin).ok()?;
    let mut raw = before.clone();
    raw.local_modes
        .remove(LocalModes::ICANON | LocalModes::ECHO);
    // A read returns after a byte, or empty after 0.1 s so the thread
    // notices `stop`.
    raw.special_codes[SpecialCodeIndex::VMIN] = 0;
    raw.special_codes[SpecialCodeIndex::VTIME] = 1;
    termios::tcsetattr(&stdin, OptionalActions::Now, &raw).ok()?;
    let spawned = std::thread::Builder::new()
        .name("weir-demo-keys".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                match std::io::stdin().lock().read(&mut byte) {
                    Ok(1) => {
                        if keys.send(byte[0]).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    if spawned.is_err() {
        let _ = termios::tcsetattr(&stdin, OptionalActions::Now, &before);
        return None;
    }
    Some(before)
}
