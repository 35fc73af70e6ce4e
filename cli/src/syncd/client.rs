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

#[cfg(test)]
mod tests {
    use tokio::net::UnixListener;

    use super::*;
    use crate::syncd::control::SessionStatus;

    /// A socket in a fresh directory, and a listener on it that answers each connection's first
    /// line with `answer` (as it is: it need not be JSON).
    fn listening(answer: &'static str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let socket = dir.path().join("daemon.sock");
        let listener = UnixListener::bind(&socket).unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                if let Ok(Some(line)) = lines.next_line().await {
                    assert!(serde_json::from_str::<Control>(&line).is_ok(), "{line}");
                    let _ = write.write_all(answer.as_bytes()).await;
                }
            }
        });
        (dir, socket)
    }

    #[tokio::test]
    async fn the_answer_on_the_line_is_read() {
        let (_dir, socket) = listening("{\"Sessions\":[]}\n");
        let answer = ask(&socket, &Control::Status).await;
        assert_eq!(
            answer.unwrap_or_else(|e| panic!("{e}")),
            ControlAnswer::Sessions(Vec::<SessionStatus>::new())
        );
    }

    #[tokio::test]
    async fn a_daemon_that_closes_without_answering_is_an_error() {
        let (_dir, socket) = listening("");
        let error = ask(&socket, &Control::Status).await.err();
        assert_eq!(
            error.map(|e| e.to_string()),
            Some("the sync daemon closed the connection".into())
        );
    }

    #[tokio::test]
    async fn an_answer_that_is_not_one_is_an_error() {
        let (_dir, socket) = listening("{\"Launched\":true}\n");
        assert!(ask(&socket, &Control::Status).await.is_err());
    }

    #[tokio::test]
    async fn no_daemon_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let error = ask(&dir.path().join("daemon.sock"), &Control::Status)
            .await
            .err();
        assert_eq!(error.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
    }
}
