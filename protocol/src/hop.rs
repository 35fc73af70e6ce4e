//! Making the hops of a request's trace: a hop is a `tracing` span named [`HOP_SPAN`] whose
//! fields say what it did ([`HOP_FIELD`]), under which request ([`REQUEST_ID_FIELD`]), about
//! which workspace, of what kind (a request's kind, a step's, an engine call's), on which host,
//! and how it ended ([`OUTCOME_FIELD`]: `ok`, or `CODE: message`, recorded before it closes). The
//! daemons' file logger writes each closed hop as a [`crate::debug::LogRecord`] with a span, and
//! `nexus admin trace` puts them in order.
//!
//! Every field is given when the span is made (a logger may read them only then), except the
//! outcome. A hop that no subscriber wants (its level filtered out) costs a check of its
//! callsite and nothing more, so hops may sit on hot paths.
//!
//! [`capture`] collects closed hops in memory, for tests that check which hops ran under which
//! request.

use tracing::Level;

pub use crate::debug::{HOP_FIELD, HOP_SPAN, OUTCOME_FIELD, REQUEST_ID_FIELD, WORKSPACE_FIELD};
use crate::error::WireError;
use crate::id::{RequestId, WorkspaceName};

/// The field that says what kind of thing a hop did: a request's kind (`workspace_create`), a
/// reconcile step's (`launch`), an engine call's (`pull`).
pub const KIND_FIELD: &str = "kind";
/// The field that names the host a hop concerns (where a workspace was placed, whose desired
/// state was pushed).
pub const HOST_FIELD: &str = "host";

/// The outcome of a hop that went well.
pub const OK: &str = "ok";

/// The longest error message an outcome carries (the rest is cut, marked `...`).
const OUTCOME_MESSAGE_BYTES: usize = 300;

/// A hop about to start: its name and fields. `Hop::new("agent.step", id).kind("launch")
/// .info()` makes the span; [`record`] (or [`ok`], [`failed`]) sets its outcome.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    name: &'static str,
    request_id: Option<RequestId>,
    workspace: Option<&'a WorkspaceName>,
    kind: Option<&'a str>,
    host: Option<&'a str>,
}

impl<'a> Hop<'a> {
    /// A hop named `name` (`coordinator.propose`), inside `request_id` when it is known.
    pub fn new(name: &'static str, request_id: Option<RequestId>) -> Hop<'a> {
        Hop {
            name,
            request_id,
            workspace: None,
            kind: None,
            host: None,
        }
    }

    pub fn workspace(mut self, workspace: &'a WorkspaceName) -> Hop<'a> {
        self.workspace = Some(workspace);
        self
    }

    pub fn kind(mut self, kind: &'a str) -> Hop<'a> {
        self.kind = Some(kind);
        self
    }

    pub fn host(mut self, host: &'a str) -> Hop<'a> {
        self.host = Some(host);
        self
    }

    /// The span, at INFO: what `nexus admin trace` shows by default.
    pub fn info(self) -> tracing::Span {
        self.at(Level::INFO)
    }

    /// The span at DEBUG: hops too frequent to keep by default (reads, sync requests).
    pub fn debug(self) -> tracing::Span {
        self.at(Level::DEBUG)
    }

    /// The span at `level` (TRACE and WARN or above are taken as DEBUG and INFO).
    pub fn at(self, level: Level) -> tracing::Span {
        use tracing::field::{Empty, display};
        let request_id = self.request_id.map(display);
        let workspace = self.workspace.map(|w| display(w.as_str()));
        if level >= Level::DEBUG {
            tracing::debug_span!(
                HOP_SPAN,
                hop = self.name,
                request_id,
                workspace,
                kind = self.kind,
                host = self.host,
                outcome = Empty
            )
        } else {
            tracing::info_span!(
                HOP_SPAN,
                hop = self.name,
                request_id,
                workspace,
                kind = self.kind,
                host = self.host,
                outcome = Empty
            )
        }
    }
}

/// `ok`, or the error as `CODE: message` (the message cut to a few hundred bytes).
pub fn outcome_of<T>(result: &Result<T, WireError>) -> String {
    match result {
        Ok(_) => OK.to_string(),
        Err(error) => error_outcome(error),
    }
}

/// An error as a hop's outcome: `CODE: message`.
pub fn error_outcome(error: &WireError) -> String {
    let mut message = error.message.as_str();
    let mut cut = "";
    if message.len() > OUTCOME_MESSAGE_BYTES {
        let mut end = OUTCOME_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = &message[..end];
        cut = "...";
    }
    format!("{}: {message}{cut}", error.code)
}

/// Whether an outcome written by [`outcome_of`] is a failure.
pub fn is_failure(outcome: &str) -> bool {
    outcome != OK
}

/// Records how the hop ended.
pub fn record<T>(span: &tracing::Span, result: &Result<T, WireError>) {
    span.record(OUTCOME_FIELD, outcome_of(result).as_str());
}

/// Records that the hop went well.
pub fn ok(span: &tracing::Span) {
    span.record(OUTCOME_FIELD, OK);
}

/// Records that the hop failed with `error`.
pub fn failed(span: &tracing::Span, error: &WireError) {
    span.record(OUTCOME_FIELD, error_outcome(error).as_str());
}

/// Closed hops, collected in memory: a `tracing_subscriber` layer for tests.
pub mod capture {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, PoisonError};

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Level, Subscriber};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    use super::{HOP_FIELD, HOP_SPAN};

    /// One hop that closed: its level and its fields as text (`hop`, `request_id`, `workspace`,
    /// `kind`, `host`, `outcome`, as given).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CapturedHop {
        pub level: Level,
        pub fields: BTreeMap<String, String>,
    }

    impl CapturedHop {
        pub fn name(&self) -> &str {
            self.field(HOP_FIELD).unwrap_or("")
        }

        pub fn field(&self, name: &str) -> Option<&str> {
            self.fields.get(name).map(String::as_str)
        }
    }

    /// The hops closed so far, in the order they closed.
    #[derive(Debug, Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<CapturedHop>>>);

    impl Captured {
        pub fn hops(&self) -> Vec<CapturedHop> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    /// A subscriber that captures every hop (at every level), for `tracing::subscriber::
    /// with_default` or `set_default`.
    pub fn subscriber() -> (impl Subscriber + Send + Sync, Captured) {
        let captured = Captured::default();
        let layer = CaptureLayer {
            captured: captured.clone(),
        };
        (tracing_subscriber::registry().with(layer), captured)
    }

    struct CaptureLayer {
        captured: Captured,
    }

    /// A span's fields so far, kept in its extensions.
    struct Fields(BTreeMap<String, String>);

    struct Visitor<'a>(&'a mut BTreeMap<String, String>);

    impl tracing::field::Visit for Visitor<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_string(), value.to_string());
        }

        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0
                .insert(field.name().to_string(), format!("{value:?}"));
        }
    }

    impl<S> Layer<S> for CaptureLayer
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            if attrs.metadata().name() != HOP_SPAN {
                return;
            }
            let mut fields = BTreeMap::new();
            attrs.record(&mut Visitor(&mut fields));
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(Fields(fields));
            }
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            if let Some(span) = ctx.span(id)
                && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
            {
                values.record(&mut Visitor(&mut fields.0));
            }
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(&id) else { return };
            let Some(fields) = span.extensions_mut().remove::<Fields>() else {
                return;
            };
            self.captured
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(CapturedHop {
                    level: *span.metadata().level(),
                    fields: fields.0,
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn a_hop_carries_its_fields_and_its_outcome() {
        let (subscriber, captured) = capture::subscriber();
        let id = RequestId::from_u128(0xabc);
        let name = WorkspaceName::new("api").unwrap();
        tracing::subscriber::with_default(subscriber, || {
            let span = Hop::new("agent.step", Some(id))
                .workspace(&name)
                .kind("launch")
                .info();
            failed(
                &span,
                &WireError::new(ErrorCode::WorkspaceStartFailed, "no such image"),
            );
            drop(span);
            let span = Hop::new("coordinator.request", None).debug();
            ok(&span);
        });
        let hops = captured.hops();
        assert_eq!(hops.len(), 2, "{hops:?}");
        assert_eq!(hops[0].name(), "agent.step");
        assert_eq!(hops[0].level, Level::INFO);
        assert_eq!(
            hops[0].field(REQUEST_ID_FIELD),
            Some("00000000000000000000000000000abc")
        );
        assert_eq!(hops[0].field(WORKSPACE_FIELD), Some("api"));
        assert_eq!(hops[0].field(KIND_FIELD), Some("launch"));
        assert_eq!(
            hops[0].field(OUTCOME_FIELD),
            Some("WORKSPACE_START_FAILED: no such image")
        );
        assert_eq!(hops[0].field(HOST_FIELD), None);
        assert_eq!(hops[1].level, Level::DEBUG);
        assert_eq!(hops[1].field(REQUEST_ID_FIELD), None);
        assert_eq!(hops[1].field(OUTCOME_FIELD), Some(OK));
    }

    #[test]
    fn outcomes_are_ok_or_a_code_and_a_bounded_message() {
        assert_eq!(outcome_of::<()>(&Ok(())), "ok");
        let long = WireError::new(ErrorCode::Internal, "é".repeat(400));
        let outcome = outcome_of::<()>(&Err(long));
        assert!(outcome.starts_with("INTERNAL: éé"), "{outcome}");
        assert!(outcome.ends_with("..."), "{outcome}");
        assert!(outcome.len() <= "INTERNAL: ".len() + OUTCOME_MESSAGE_BYTES + 3);
        assert!(is_failure(&outcome));
        assert!(!is_failure(OK));
    }
}
