//! Asking a running daemon: one request on a fresh connection to its socket, one answer back.
//! Starting a daemon when none answers is the command's business (`commands::sync`).

use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::control::{Control, ControlAnswer, to_line};

/// Sends one request to the daemon at `socket` and reads its answer.
pub async fn ask(socket: &Path, control: &Control) -> Result<ControlAnswer, std::io::Error> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let line = to_line(control).map_err(std::io::Error::other)?;
    write.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await?
        .ok_or_else(|| std::io::Error::other("the sync daemon closed the connection"))?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
