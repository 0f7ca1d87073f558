//! The log subscriber `tether serve` installs, and the plain field format it writes without colour.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// Lines to stderr, filtered by `TETHER_LOG` (`EnvFilter` syntax, default `info`, so request spans
/// are on), with ANSI colours when `ansi`. The bench server installs the same one, so HTTP figures
/// include what logging costs.
pub fn install_log_subscriber(ansi: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if ansi {
        builder.init();
    } else {
        builder.fmt_fields(PlainFields).init();
    }
}

/// Fields as `name=value`, separated by spaces, the message bare: the text of tracing-subscriber's
/// default format without colour (a test compares the two), written with one formatter call per
/// field. The default styles each name and `=` even when colour is off, which for a request span's
/// fields was a measurable share of an authorize call (docs/performance.md).
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        // A span's fields are kept in a String that starts empty: written piece by piece, it
        // grew (and moved) several times per request. Written whole, it is allocated once, plus
        // this scratch buffer (1.0k fewer instructions per request than writing straight in).
        let mut visitor = PlainVisitor { text: String::with_capacity(160), first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result?;
        writer.write_str(&visitor.text)
    }
}

struct PlainVisitor {
    text: String,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor {
    /// Messages and errors are written by tracing-subscriber's own visitor, which escapes the
    /// terminal control sequences they may carry and lists an error's sources. `Writer::new`
    /// escapes, as the subscriber tether installs does.
    fn as_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut visitor = DefaultVisitor::new(Writer::new(&mut self.text), self.first);
        record(&mut visitor);
        self.result = visitor.finish();
        self.first = false;
    }
}

impl Visit for PlainVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.as_default(|v| v.record_str(field, value));
        } else {
            self.record_debug(field, &value)
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.as_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name == "message" {
            return self.as_default(|v| v.record_debug(field, value));
        }
        if self.result.is_err() {
            return;
        }
        // What tracing-log adds to a `log` record; the default format leaves it out too.
        if name.starts_with("log.") {
            return;
        }
        if !std::mem::take(&mut self.first) {
            self.text.push(' ');
        }
        self.text.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.text.push('=');
        // Writing to a String fails only if the value's own Debug does.
        self.result = write!(self.text, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::MakeWriter;

    /// A writer that keeps what it is given, for comparing two formats.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default()
        }
    }

    /// An error with a source, as stores and HTTP clients return them.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("delivery failed")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Logs events in a span with fields of every kind, one of them recorded later, a message
    /// carrying a terminal escape and an error with a source.
    fn log_sample() {
        let span =
            tracing::info_span!("request", id = 7u64, method = %"POST", path = "/v1/x", caller = tracing::field::Empty);
        let _entered = span.enter();
        span.record("caller", tracing::field::display("cred_1"));
        tracing::info!(error = %"no such table", code = 500, ok = false, r#type = "a\"b", "internal error");
        let cause = Outer(std::io::Error::other("connection reset"));
        tracing::warn!(error = &cause as &(dyn std::error::Error + 'static), "webhook \x1b[31mred");
        tracing::warn!(message = "bare", kind = "x");
        // As tracing-log forwards a `log` record.
        tracing::warn!(log.target = "dependency", log.line = 7u64, kind = "y", "from the log crate");
    }

    #[test]
    fn plain_fields_write_what_the_default_format_writes_without_colour() {
        let (plain, default) = (Captured::default(), Captured::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(plain.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(PlainFields)
            .finish();
        tracing::subscriber::with_default(subscriber, log_sample);
        let subscriber = tracing_subscriber::fmt()
            .with_writer(default.clone())
            .with_ansi(false)
            .without_time()
            .fmt_fields(DefaultFields::new())
            .finish();
        tracing::subscriber::with_default(subscriber, log_sample);
        let line = plain.text();
        assert!(
            line.contains(r#"request{id=7 method=POST path="/v1/x" caller=cred_1}"#),
            "span fields as name=value, recorded ones appended: {line}"
        );
        assert!(
            line.contains(r#"internal error error=no such table code=500 ok=false type="a\"b""#),
            "message bare, then the event's fields: {line}"
        );
        assert!(line.contains(r"webhook \x1b[31mred"), "escapes in a message are escaped: {line}");
        assert!(line.contains("connection reset"), "an error's sources are listed: {line}");
        assert!(line.contains("from the log crate kind=\"y\"\n"), "a log record's origin is left out: {line}");
        assert_eq!(line, default.text());
    }
}
