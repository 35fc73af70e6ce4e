//! How the CLI fails: every error has a stable code (and so a stable exit code), a message, a
//! suggestion, and the request id when a server was involved.

use std::fmt::Write;

use nexus_protocol::error::{ErrorCode, WireError};

#[derive(Debug, Clone, PartialEq)]
pub struct CliError {
    /// Boxed: errors travel up through every command's `Result`, which stays small.
    pub error: Box<WireError>,
    /// A suggestion more specific than the code's own.
    pub suggestion: Option<String>,
}

impl CliError {
    /// An error raised here, not by a server.
    pub fn local(code: ErrorCode, message: impl Into<String>) -> CliError {
        CliError {
            error: Box::new(WireError::new(code, message)),
            suggestion: None,
        }
    }

    pub fn suggest(mut self, suggestion: &str) -> CliError {
        self.suggestion = Some(suggestion.to_string());
        self
    }

    /// A server answered with a response of the wrong kind.
    pub fn unexpected(response: &nexus_protocol::message::Response) -> CliError {
        CliError::local(
            ErrorCode::ProtocolError,
            format!("unexpected answer from the server: {response:?}"),
        )
    }

    /// The error, naming `request_id` unless it names a request already.
    pub fn under_request(mut self, request_id: nexus_protocol::RequestId) -> CliError {
        if self.error.request_id.is_none() {
            self.error.request_id = Some(request_id);
        }
        self
    }

    pub fn exit_code(&self) -> u8 {
        self.error.code.exit_code()
    }

    fn suggestion(&self) -> &str {
        self.suggestion
            .as_deref()
            .unwrap_or(self.error.code.suggestion())
    }

    /// For people: message, code, suggestion and request id on their own lines.
    pub fn render_text(&self) -> String {
        let code = self.error.code;
        let mut text = format!("error: {}\n", self.error.message);
        let _ = writeln!(text, "  code:       {code} ({})", code.message());
        let _ = writeln!(text, "  suggestion: {}", self.suggestion());
        if let Some(id) = self.error.request_id {
            let _ = writeln!(text, "  request id: {id}");
        }
        text
    }

    /// For scripts: `{"error": {"code", "message", "suggestion", "request_id"}}`.
    pub fn render_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.error.code.as_str(),
                "message": self.error.message,
                "suggestion": self.suggestion(),
                "request_id": self.error.request_id.map(|id| id.to_string()),
            }
        })
    }
}

impl From<WireError> for CliError {
    fn from(error: WireError) -> CliError {
        CliError {
            error: Box::new(error),
            suggestion: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;
    use nexus_protocol::RequestId;

    use super::*;

    #[test]
    fn errors_render_for_people_and_scripts() {
        let error = CliError::from(
            WireError::new(
                ErrorCode::ResourceExhausted,
                "no host has room for a large workspace",
            )
            .with_request_id(RequestId::from_u128(0xabc)),
        );
        expect![[r#"
            error: no host has room for a large workspace
              code:       RESOURCE_EXHAUSTED (Not enough resources)
              suggestion: destroy unused workspaces (`nexus workspace cleanup`) or try again in 30 s
              request id: 00000000000000000000000000000abc
        "#]]
        .assert_eq(&error.render_text());
        expect![[r#"{"error":{"code":"RESOURCE_EXHAUSTED","message":"no host has room for a large workspace","request_id":"00000000000000000000000000000abc","suggestion":"destroy unused workspaces (`nexus workspace cleanup`) or try again in 30 s"}}"#]]
        .assert_eq(&error.render_json().to_string());
        assert_eq!(error.exit_code(), 14);
        let local = CliError::local(
            ErrorCode::InvalidArgument,
            "no coordinator address configured",
        )
        .suggest("pass --coordinator");
        expect![[r#"{"error":{"code":"INVALID_ARGUMENT","message":"no coordinator address configured","request_id":null,"suggestion":"pass --coordinator"}}"#]]
        .assert_eq(&local.render_json().to_string());
    }

    #[test]
    fn an_error_names_the_commands_request_unless_it_names_its_own() {
        let command = RequestId::from_u128(1);
        let found_here = CliError::local(ErrorCode::WorkspaceStartFailed, "workspace api failed")
            .under_request(command);
        assert_eq!(found_here.error.request_id, Some(command));
        assert!(
            found_here
                .render_text()
                .contains("request id: 00000000000000000000000000000001")
        );
        assert_eq!(
            found_here.render_json()["error"]["request_id"],
            "00000000000000000000000000000001"
        );
        let answered = CliError::from(
            WireError::new(ErrorCode::Timeout, "late").with_request_id(RequestId::from_u128(2)),
        )
        .under_request(command);
        assert_eq!(answered.error.request_id, Some(RequestId::from_u128(2)));
    }
}
