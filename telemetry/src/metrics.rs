//! A daemon's metrics: the one home of `prometheus-client`. A [`Registry`] hands out typed
//! handles under their exposed names (`nexus_heartbeats_total`, not the crate's suffix-less
//! `nexus_heartbeats`), and [`Registry::encode`] writes them in the format the scraper asked for.
//!
//! Labelled families take their label names once, at registration, and their values, in the
//! same order, at each use: a value's place says which label it is, so a call cannot misname one.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter as RawCounter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge as RawGauge;
use prometheus_client::metrics::histogram::Histogram as RawHistogram;

mod classic;

/// A label set: names fixed at registration, values given at each use.
type LabelSet = Vec<(&'static str, String)>;

/// The exposition formats a scrape can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, what Prometheus asks for first.
    OpenMetrics,
    /// Prometheus' classic text format 0.0.4, for everything else (`curl`, `promtool check
    /// metrics`).
    Classic,
}

impl Format {
    /// The format an HTTP `Accept` header asks for.
    pub fn from_accept(accept: &str) -> Format {
        if accept.contains("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// Every metric a daemon exposes.
#[derive(Debug, Default)]
pub struct Registry {
    inner: prometheus_client::registry::Registry,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A counter; `name` ends in `_total`.
    pub fn counter(&mut self, name: &'static str, help: &str) -> Counter {
        let counter = RawCounter::default();
        self.inner
            .register(counter_family(name), bare(help), counter.clone());
        Counter(counter)
    }

    /// A family of counters labelled `labels`; `name` ends in `_total`.
    pub fn counters<const N: usize>(
        &mut self,
        name: &'static str,
        help: &str,
        labels: [&'static str; N],
    ) -> Counters<N> {
        let family = Family::<LabelSet, RawCounter>::default();
        self.inner
            .register(counter_family(name), bare(help), family.clone());
        Counters {
            labels,
            family: Arc::new(family),
        }
    }

    pub fn gauge(&mut self, name: &'static str, help: &str) -> Gauge {
        let gauge = RawGauge::<f64, std::sync::atomic::AtomicU64>::default();
        self.inner.register(name, bare(help), gauge.clone());
        Gauge(gauge)
    }

    /// A family of gauges labelled `labels`.
    pub fn gauges<const N: usize>(
        &mut self,
        name: &'static str,
        help: &str,
        labels: [&'static str; N],
    ) -> Gauges<N> {
        let family = Family::<LabelSet, RawGauge<f64, std::sync::atomic::AtomicU64>>::default();
        self.inner.register(name, bare(help), family.clone());
        Gauges {
            labels,
            family: Arc::new(family),
        }
    }

    /// A histogram with upper bounds `buckets` (at most 12, at the thresholds alerts read).
    pub fn histogram(&mut self, name: &'static str, help: &str, buckets: &[f64]) -> Histogram {
        let histogram = RawHistogram::new(buckets.iter().copied());
        self.inner.register(name, bare(help), histogram.clone());
        Histogram(histogram)
    }

    /// A family of histograms labelled `labels`, each with upper bounds `buckets`.
    pub fn histograms<const N: usize>(
        &mut self,
        name: &'static str,
        help: &str,
        labels: [&'static str; N],
        buckets: &[f64],
    ) -> Histograms<N> {
        let family = Family::<LabelSet, RawHistogram, Buckets>::new_with_constructor(Buckets(
            buckets.into(),
        ));
        self.inner.register(name, bare(help), family.clone());
        Histograms {
            labels,
            family: Arc::new(family),
        }
    }

    /// Metrics read at each scrape rather than kept (the process's own, from `/proc`).
    pub fn collect(&mut self, source: impl Source) {
        self.inner
            .register_collector(Box::new(SourceCollector(source)));
    }

    /// Everything, in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and no metric here returns an error of its own.
        if let Err(error) = encode(&mut text, &self.inner) {
            tracing::error!("cannot encode the metrics: {error}");
        }
        match format {
            Format::OpenMetrics => text,
            Format::Classic => classic::from_open_metrics(&text),
        }
    }
}

/// A help text without its final period, which the crate adds.
fn bare(help: &str) -> &str {
    help.strip_suffix('.').unwrap_or(help)
}

/// The crate names a counter's family without the `_total` it writes on each sample.
fn counter_family(name: &'static str) -> &'static str {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    name.strip_suffix("_total").unwrap_or(name)
}

/// The label set for `values`, each escaped as the text formats require: the crate writes label
/// values as given, and a `"`, `\` or line break would otherwise end the sample early.
fn labelled<const N: usize>(names: &[&'static str; N], values: [&str; N]) -> LabelSet {
    names
        .iter()
        .zip(values)
        .map(|(name, value)| (*name, escaped(value)))
        .collect()
}

fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct Counter(RawCounter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn inc_by(&self, by: u64) {
        self.0.inc_by(by);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

#[derive(Debug, Clone)]
pub struct Counters<const N: usize> {
    labels: [&'static str; N],
    family: Arc<Family<LabelSet, RawCounter>>,
}

impl<const N: usize> Counters<N> {
    pub fn inc(&self, values: [&str; N]) {
        self.inc_by(values, 1);
    }

    pub fn inc_by(&self, values: [&str; N], by: u64) {
        self.family
            .get_or_create(&labelled(&self.labels, values))
            .inc_by(by);
    }

    /// Creates the series for `values` at 0: a family is exported only with its series, and a
    /// rule or a dashboard should find one before the first event.
    pub fn init(&self, values: [&str; N]) {
        self.inc_by(values, 0);
    }

    /// The count for `values` (0 where there is none yet).
    pub fn get(&self, values: [&str; N]) -> u64 {
        self.family
            .get(&labelled(&self.labels, values))
            .map_or(0, |counter| counter.get())
    }
}

#[derive(Debug, Clone)]
pub struct Gauge(RawGauge<f64, std::sync::atomic::AtomicU64>);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.set(value);
    }

    pub fn inc(&self) {
        self.0.inc_by(1.0);
    }

    pub fn dec(&self) {
        self.0.dec_by(1.0);
    }

    pub fn get(&self) -> f64 {
        self.0.get()
    }
}

#[derive(Debug, Clone)]
pub struct Gauges<const N: usize> {
    labels: [&'static str; N],
    family: Arc<Family<LabelSet, RawGauge<f64, std::sync::atomic::AtomicU64>>>,
}

impl<const N: usize> Gauges<N> {
    pub fn set(&self, values: [&str; N], value: f64) {
        self.family
            .get_or_create(&labelled(&self.labels, values))
            .set(value);
    }

    /// Replaces every series with `series`: label sets no longer present disappear (a workspace
    /// that left the host, a state nothing is in any more).
    pub fn replace<'a>(&self, series: impl IntoIterator<Item = ([&'a str; N], f64)>) {
        self.family.clear();
        for (values, value) in series {
            self.set(values, value);
        }
    }

    /// Removes the series for `values` (a peer gone, say), if there is one.
    pub fn remove(&self, values: [&str; N]) {
        self.family.remove(&labelled(&self.labels, values));
    }

    /// The value for `values`, if it has one.
    pub fn get(&self, values: [&str; N]) -> Option<f64> {
        self.family
            .get(&labelled(&self.labels, values))
            .map(|gauge| gauge.get())
    }
}

#[derive(Debug, Clone)]
pub struct Histogram(RawHistogram);

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.0.observe(value);
    }

    pub fn observe_duration(&self, duration: std::time::Duration) {
        self.observe(duration.as_secs_f64());
    }
}

#[derive(Debug, Clone)]
pub struct Histograms<const N: usize> {
    labels: [&'static str; N],
    family: Arc<Family<LabelSet, RawHistogram, Buckets>>,
}

impl<const N: usize> Histograms<N> {
    pub fn observe(&self, values: [&str; N], value: f64) {
        self.family
            .get_or_create(&labelled(&self.labels, values))
            .observe(value);
    }

    pub fn observe_duration(&self, values: [&str; N], duration: std::time::Duration) {
        self.observe(values, duration.as_secs_f64());
    }

    /// Creates the series for `values`, empty: a family is exported only with its series, and
    /// a rule or a dashboard should find one before the first observation.
    pub fn init(&self, values: [&str; N]) {
        let _created = self.family.get_or_create(&labelled(&self.labels, values));
    }
}

/// Makes each histogram of a family with the family's buckets.
#[derive(Debug, Clone)]
struct Buckets(Arc<[f64]>);

impl MetricConstructor<RawHistogram> for Buckets {
    fn new_metric(&self) -> RawHistogram {
        RawHistogram::new(self.0.iter().copied())
    }
}

/// Values read when a scrape asks, rather than kept up to date.
pub trait Source: std::fmt::Debug + Send + Sync + 'static {
    fn read(&self, out: &mut Readings);
}

/// What a [`Source`] read: unlabelled gauges and counters.
#[derive(Debug, Default)]
pub struct Readings {
    values: Vec<(&'static str, &'static str, MetricType, f64)>,
}

impl Readings {
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.values.push((name, help, MetricType::Gauge, value));
    }

    /// A counter kept elsewhere (the kernel's count of CPU time); `name` ends in `_total`.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.values
            .push((counter_family(name), help, MetricType::Counter, value));
    }

    /// The family names read, as the crate names them (counters without `_total`).
    #[cfg(test)]
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.values.iter().map(|(name, ..)| *name).collect()
    }
}

#[derive(Debug)]
struct SourceCollector<S>(S);

impl<S: Source> Collector for SourceCollector<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut readings = Readings::default();
        self.0.read(&mut readings);
        for (name, help, kind, value) in readings.values {
            // Unlike a registered metric's, a collector's help is written as given.
            let help = format!("{}.", bare(help));
            let mut metric = encoder.encode_descriptor(name, &help, None, kind)?;
            match kind {
                MetricType::Counter => metric.encode_counter::<NoLabelSet, _, u64>(&value, None)?,
                _ => metric.encode_gauge(&value)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Source for Fixed {
        fn read(&self, out: &mut Readings) {
            out.gauge("nexus_fixed_bytes", "A fixed size.", 42.0);
            out.counter("nexus_fixed_total", "A fixed count.", 7.0);
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry
            .counter("nexus_events_total", "Events seen.")
            .inc_by(3);
        registry
            .counters("nexus_requests_total", "Requests.", ["kind", "code"])
            .inc(["create", "OK"]);
        registry.gauge("nexus_up", "Whether it is up.").set(1.0);
        registry
            .gauges("nexus_hosts", "Hosts by status.", ["status"])
            .replace([(["ready"], 2.0), (["down"], 1.0)]);
        registry
            .histogram("nexus_sync_seconds", "Syncs.", &[0.5, 1.0])
            .observe(0.7);
        registry
            .histograms("nexus_start_seconds", "Starts.", ["kind"], &[1.0])
            .observe(["warm"], 0.25);
        registry.collect(Fixed);
        registry
    }

    #[test]
    fn the_classic_format_names_each_family_as_its_samples_do() {
        expect_test::expect![[r#"
            # HELP nexus_events_total Events seen.
            # TYPE nexus_events_total counter
            nexus_events_total 3
            # HELP nexus_requests_total Requests.
            # TYPE nexus_requests_total counter
            nexus_requests_total{kind="create",code="OK"} 1
            # HELP nexus_up Whether it is up.
            # TYPE nexus_up gauge
            nexus_up 1.0
            # HELP nexus_hosts Hosts by status.
            # TYPE nexus_hosts gauge
            nexus_hosts{status="down"} 1.0
            nexus_hosts{status="ready"} 2.0
            # HELP nexus_sync_seconds Syncs.
            # TYPE nexus_sync_seconds histogram
            nexus_sync_seconds_sum 0.7
            nexus_sync_seconds_count 1
            nexus_sync_seconds_bucket{le="0.5"} 0
            nexus_sync_seconds_bucket{le="1.0"} 1
            nexus_sync_seconds_bucket{le="+Inf"} 1
            # HELP nexus_start_seconds Starts.
            # TYPE nexus_start_seconds histogram
            nexus_start_seconds_sum{kind="warm"} 0.25
            nexus_start_seconds_count{kind="warm"} 1
            nexus_start_seconds_bucket{le="1.0",kind="warm"} 1
            nexus_start_seconds_bucket{le="+Inf",kind="warm"} 1
            # HELP nexus_fixed_bytes A fixed size.
            # TYPE nexus_fixed_bytes gauge
            nexus_fixed_bytes 42.0
            # HELP nexus_fixed_total A fixed count.
            # TYPE nexus_fixed_total counter
            nexus_fixed_total 7.0
        "#]]
        .assert_eq(&sorted_families(&registry().encode(Format::Classic)));
    }

    #[test]
    fn open_metrics_is_what_the_crate_writes() {
        let text = registry().encode(Format::OpenMetrics);
        assert!(text.contains("# TYPE nexus_events counter\n"), "{text}");
        assert!(text.contains("nexus_events_total 3\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut registry = Registry::new();
        registry
            .gauges("nexus_x", "X.", ["why"])
            .set(["a \"quoted\" \\ back\nslash"], 1.0);
        let text = registry.encode(Format::Classic);
        assert!(
            text.contains("nexus_x{why=\"a \\\"quoted\\\" \\\\ back\\nslash\"} 1.0\n"),
            "{text}"
        );
    }

    #[test]
    fn a_replaced_family_forgets_what_is_gone() {
        let mut registry = Registry::new();
        let hosts = registry.gauges("nexus_hosts", "Hosts.", ["status"]);
        hosts.replace([(["ready"], 2.0), (["down"], 1.0)]);
        hosts.replace([(["ready"], 3.0)]);
        assert_eq!(hosts.get(["ready"]), Some(3.0));
        assert_eq!(hosts.get(["down"]), None);
        hosts.remove(["ready"]);
        assert_eq!(hosts.get(["ready"]), None);
    }

    #[test]
    fn an_initialised_histogram_is_exported_empty() {
        let mut registry = Registry::new();
        registry
            .histograms("nexus_start_seconds", "Starts.", ["kind"], &[1.0])
            .init(["cold"]);
        let text = registry.encode(Format::Classic);
        assert!(
            text.contains("nexus_start_seconds_count{kind=\"cold\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn handles_read_back_what_they_count() {
        let mut registry = Registry::new();
        let requests = registry.counters("nexus_requests_total", "Requests.", ["kind"]);
        requests.inc(["create"]);
        requests.inc_by(["create"], 2);
        assert_eq!(requests.get(["create"]), 3);
        assert_eq!(requests.get(["delete"]), 0);
    }

    /// The family map is a hash map: sort each family's samples so the expectation is stable.
    fn sorted_families(text: &str) -> String {
        let mut out = String::new();
        let mut samples: Vec<&str> = vec![];
        let flush = |samples: &mut Vec<&str>, out: &mut String| {
            if !samples.iter().any(|s| s.contains("le=")) {
                samples.sort_unstable();
            }
            for sample in samples.drain(..) {
                out.push_str(sample);
                out.push('\n');
            }
        };
        for line in text.lines() {
            if line.starts_with('#') {
                flush(&mut samples, &mut out);
                out.push_str(line);
                out.push('\n');
            } else {
                samples.push(line);
            }
        }
        flush(&mut samples, &mut out);
        out
    }
}
