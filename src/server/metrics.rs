//! Counters and a latency histogram, rendered in the Prometheus text format.
//!
//! Everything is a relaxed atomic: a scrape may see one counter a request
//! ahead of another, which Prometheus tolerates.
//!
//! Written by hand rather than with the `prometheus` or
//! `prometheus-client` crates: writ exports a fixed handful of series, and
//! those crates bring a registry, label maps behind locks (or protobuf and
//! their own derive macros) into the hot path for what is here a few lines
//! of `writeln!` over atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::search::Kind;
use super::state::Loaded;

/// The endpoints that decide, each with its own latency series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Decide,
    Batch,
    Evaluation,
    Evaluations,
    /// An AuthZEN search (src/server/search.rs).
    Search(Kind),
}

impl Endpoint {
    const ALL: [Endpoint; 7] = [
        Endpoint::Decide,
        Endpoint::Batch,
        Endpoint::Evaluation,
        Endpoint::Evaluations,
        Endpoint::Search(Kind::Subject),
        Endpoint::Search(Kind::Resource),
        Endpoint::Search(Kind::Action),
    ];

    /// The route, as logged and labelled.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Decide => "/v1/decide",
            Endpoint::Batch => "/v1/decide/batch",
            Endpoint::Evaluation => "/access/v1/evaluation",
            Endpoint::Evaluations => "/access/v1/evaluations",
            Endpoint::Search(kind) => kind.path(),
        }
    }

    fn index(self) -> usize {
        match self {
            Endpoint::Decide => 0,
            Endpoint::Batch => 1,
            Endpoint::Evaluation => 2,
            Endpoint::Evaluations => 3,
            Endpoint::Search(Kind::Subject) => 4,
            Endpoint::Search(Kind::Resource) => 5,
            Endpoint::Search(Kind::Action) => 6,
        }
    }
}

/// Why a request was refused; the `code` of the JSON error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    /// The body is not JSON (or not UTF-8).
    MalformedJson,
    /// JSON, but a field has the wrong type, a required field is missing, or
    /// a value is out of range.
    InvalidRequest,
    /// The body is over `--max-body`.
    BodyTooLarge,
    /// A batch with more items than allowed.
    BatchTooLarge,
    /// The body did not arrive within the request timeout.
    Timeout,
    /// The body could not be read (the client went away).
    BadBody,
    /// No such route.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// A decision endpoint's body is not declared JSON (`Content-Type`).
    UnsupportedMediaType,
    /// The request target is longer than the server reads.
    UriTooLong,
    /// The request's headers are more or larger than the server reads.
    HeadersTooLarge,
    /// Required mode: the decision could not be written to the decision
    /// log, so it is not answered (503).
    DecisionLogUnavailable,
    /// `/v1/grants`: the grant ledger did not answer or could not record,
    /// so nothing is decided (503).
    LedgerUnavailable,
    /// `/v1/grants`: the `Idempotency-Key` was first used with a different
    /// request (422).
    IdempotencyKeyReused,
}

impl ErrorCode {
    /// Every code, in the order of the metric series.
    pub(crate) const ALL: [ErrorCode; 14] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidRequest,
        ErrorCode::BodyTooLarge,
        ErrorCode::BatchTooLarge,
        ErrorCode::Timeout,
        ErrorCode::BadBody,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::DecisionLogUnavailable,
        ErrorCode::LedgerUnavailable,
        ErrorCode::IdempotencyKeyReused,
    ];

    /// The code as it appears in error bodies and metric labels.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::Timeout => "timeout",
            ErrorCode::BadBody => "bad_body",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::DecisionLogUnavailable => "decision_log_unavailable",
            ErrorCode::LedgerUnavailable => "ledger_unavailable",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.5, 1.0,
];

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket, not cumulative; the last slot is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    allow: AtomicU64,
    deny: AtomicU64,
    latency: [Histogram; Endpoint::ALL.len()],
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    log_lines: AtomicU64,
    log_write_errors: AtomicU64,
    time_filled: AtomicU64,
    /// Re-decided live grants, by outcome: revoked, narrowed, unchanged.
    redecided: [AtomicU64; 3],
    /// Re-decision passes (reload, recheck, event with context): done,
    /// stopped by the ledger.
    redecision_passes: [AtomicU64; 2],
    /// Decision log lines shipped to the HTTP collector: sent, retried,
    /// dropped (src/server/logship.rs).
    shipped: [AtomicU64; 3],
    /// Whether lines are shipped at all (the series are rendered only then).
    shipping: std::sync::atomic::AtomicBool,
}

impl Metrics {
    pub(crate) fn decision(&self, allow: bool) {
        if allow {
            self.allow.fetch_add(1, Ordering::Relaxed);
        } else {
            self.deny.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn latency(&self, endpoint: Endpoint, elapsed: Duration) {
        self.latency[endpoint.index()].observe(elapsed);
    }

    pub(crate) fn reload(&self, ok: bool) {
        if ok {
            self.reloads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        self.errors[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// One re-decision pass: its counts, or `None` when the ledger stopped
    /// it.
    pub(crate) fn redecision(&self, counts: Option<(usize, usize, usize)>) {
        let add = |c: &AtomicU64, n: usize| {
            c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
        };
        match counts {
            Some((revoked, narrowed, unchanged)) => {
                add(&self.redecided[0], revoked);
                add(&self.redecided[1], narrowed);
                add(&self.redecided[2], unchanged);
                add(&self.redecision_passes[0], 1);
            }
            None => add(&self.redecision_passes[1], 1),
        }
    }

    pub(crate) fn time_filled(&self) {
        self.time_filled.fetch_add(1, Ordering::Relaxed);
    }

    /// Decision log lines written and lines that could not be.
    pub(crate) fn log_lines(&self, written: u64, lost: u64) {
        if written > 0 {
            self.log_lines.fetch_add(written, Ordering::Relaxed);
        }
        if lost > 0 {
            self.log_write_errors.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Turns the shipping series on.
    pub(crate) fn shipping_on(&self) {
        self.shipping.store(true, Ordering::Relaxed);
    }

    /// Lines the collector took.
    pub(crate) fn shipped_sent(&self, lines: u64) {
        self.shipped[0].fetch_add(lines, Ordering::Relaxed);
    }

    /// Lines of a failed attempt, to be tried again.
    pub(crate) fn shipped_retried(&self, lines: u64) {
        self.shipped[1].fetch_add(lines, Ordering::Relaxed);
    }

    /// Lines given up on (a full buffer, a failed required batch).
    pub(crate) fn shipped_dropped(&self, lines: u64) {
        self.shipped[2].fetch_add(lines, Ordering::Relaxed);
    }

    /// Shipped lines: sent, retried, dropped.
    pub(crate) fn shipped(&self) -> (u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&self.shipped[0]),
            get(&self.shipped[1]),
            get(&self.shipped[2]),
        )
    }

    /// Successful reloads so far.
    pub(crate) fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads so far.
    pub(crate) fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub(crate) fn render(&self, loaded: &Loaded) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);

        out.push_str("# HELP writ_decisions_total Decisions made, by outcome.\n");
        out.push_str("# TYPE writ_decisions_total counter\n");
        let _ = writeln!(
            out,
            "writ_decisions_total{{outcome=\"allow\"}} {}",
            get(&self.allow)
        );
        let _ = writeln!(
            out,
            "writ_decisions_total{{outcome=\"deny\"}} {}",
            get(&self.deny)
        );

        out.push_str(
            "# HELP writ_request_duration_seconds Time to answer a decision request, from the headers received to the response ready.\n",
        );
        out.push_str("# TYPE writ_request_duration_seconds histogram\n");
        for endpoint in Endpoint::ALL {
            let histogram = &self.latency[endpoint.index()];
            let path = endpoint.path();
            let mut cumulative = 0u64;
            for (slot, bound) in BUCKETS.iter().enumerate() {
                cumulative += get(&histogram.buckets[slot]);
                let _ = writeln!(
                    out,
                    "writ_request_duration_seconds_bucket{{endpoint=\"{path}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += get(&histogram.buckets[BUCKETS.len()]);
            let _ = writeln!(
                out,
                "writ_request_duration_seconds_bucket{{endpoint=\"{path}\",le=\"+Inf\"}} {cumulative}"
            );
            let sum = get(&histogram.sum_nanos) as f64 / 1e9;
            let _ = writeln!(
                out,
                "writ_request_duration_seconds_sum{{endpoint=\"{path}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "writ_request_duration_seconds_count{{endpoint=\"{path}\"}} {}",
                get(&histogram.count)
            );
        }

        out.push_str(
            "# HELP writ_request_errors_total Requests refused with an error (4xx, or 503 when the decision log is required and failed), by code.\n",
        );
        out.push_str("# TYPE writ_request_errors_total counter\n");
        for code in ErrorCode::ALL {
            let _ = writeln!(
                out,
                "writ_request_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                get(&self.errors[code.index()])
            );
        }

        out.push_str("# HELP writ_policy_reloads_total Policy reloads that succeeded.\n");
        out.push_str("# TYPE writ_policy_reloads_total counter\n");
        let _ = writeln!(out, "writ_policy_reloads_total {}", get(&self.reloads));
        out.push_str(
            "# HELP writ_policy_reload_failures_total Policy reloads that failed; the last good set kept serving.\n",
        );
        out.push_str("# TYPE writ_policy_reload_failures_total counter\n");
        let _ = writeln!(
            out,
            "writ_policy_reload_failures_total {}",
            get(&self.reload_failures)
        );

        out.push_str("# HELP writ_policy_rules Rules in the policy set that is serving.\n");
        out.push_str("# TYPE writ_policy_rules gauge\n");
        let _ = writeln!(
            out,
            "writ_policy_rules {}",
            loaded.engine.policy().rules.len()
        );
        out.push_str("# HELP writ_policy_info The digest of the policy set that is serving.\n");
        out.push_str("# TYPE writ_policy_info gauge\n");
        let _ = writeln!(
            out,
            "writ_policy_info{{digest=\"{}\"}} 1",
            loaded.engine.digest()
        );

        out.push_str(
            "# HELP writ_time_filled_total Requests without environment.time that the server timed from its clock.\n",
        );
        out.push_str("# TYPE writ_time_filled_total counter\n");
        let _ = writeln!(out, "writ_time_filled_total {}", get(&self.time_filled));

        out.push_str("# HELP writ_redecisions_total Live grants decided again (after a reload, on recheck, for an event with context), by outcome.\n");
        out.push_str("# TYPE writ_redecisions_total counter\n");
        for (slot, outcome) in ["revoked", "narrowed", "unchanged"].iter().enumerate() {
            let _ = writeln!(
                out,
                "writ_redecisions_total{{outcome=\"{outcome}\"}} {}",
                get(&self.redecided[slot])
            );
        }
        out.push_str("# HELP writ_redecision_passes_total Re-decision passes, by result (failed: the ledger stopped the pass; the grants not reached stay as they were).\n");
        out.push_str("# TYPE writ_redecision_passes_total counter\n");
        for (slot, result) in ["done", "failed"].iter().enumerate() {
            let _ = writeln!(
                out,
                "writ_redecision_passes_total{{result=\"{result}\"}} {}",
                get(&self.redecision_passes[slot])
            );
        }

        out.push_str("# HELP writ_decision_log_lines_total Decision log lines written (to the file); with a collector, lines shipped to it by result.\n");
        out.push_str("# TYPE writ_decision_log_lines_total counter\n");
        let _ = writeln!(
            out,
            "writ_decision_log_lines_total {}",
            get(&self.log_lines)
        );
        if self.shipping.load(Ordering::Relaxed) {
            for (slot, result) in ["sent", "retried", "dropped"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "writ_decision_log_lines_total{{sink=\"http\",result=\"{result}\"}} {}",
                    get(&self.shipped[slot])
                );
            }
        }
        out.push_str("# HELP writ_decision_log_write_errors_total Decision log lines that could not be written.\n");
        out.push_str("# TYPE writ_decision_log_write_errors_total counter\n");
        let _ = writeln!(
            out,
            "writ_decision_log_write_errors_total {}",
            get(&self.log_write_errors)
        );
        out
    }
}

/// The identity series (with `--trust`): token verifications by use,
/// issuer and outcome, the token cache, and the JWKS URLs' fetches.
pub(crate) fn identity(out: &mut String, counts: &crate::identity::Counts) {
    out.push_str("# HELP writ_identity_verifications_total Tokens verified or refused, by use (subject, approval), issuer and outcome (verified or a failure code).\n");
    out.push_str("# TYPE writ_identity_verifications_total counter\n");
    for (used, issuer, outcome, count) in &counts.verifications {
        let _ = writeln!(
            out,
            "writ_identity_verifications_total{{use=\"{used}\",issuer=\"{}\",outcome=\"{outcome}\"}} {count}",
            label(issuer)
        );
    }
    out.push_str("# HELP writ_identity_token_cache_hits_total Verifications answered from the cache of verified tokens.\n");
    out.push_str("# TYPE writ_identity_token_cache_hits_total counter\n");
    let _ = writeln!(
        out,
        "writ_identity_token_cache_hits_total {}",
        counts.cache_hits
    );
    out.push_str("# HELP writ_identity_token_cache_misses_total Verifications that checked a signature or failed before it.\n");
    out.push_str("# TYPE writ_identity_token_cache_misses_total counter\n");
    let _ = writeln!(
        out,
        "writ_identity_token_cache_misses_total {}",
        counts.cache_misses
    );
    out.push_str("# HELP writ_identity_jwks_fetches_total JWKS URL fetches tried, by issuer.\n");
    out.push_str("# TYPE writ_identity_jwks_fetches_total counter\n");
    for (issuer, fetches, _, _) in &counts.jwks {
        let _ = writeln!(
            out,
            "writ_identity_jwks_fetches_total{{issuer=\"{}\"}} {fetches}",
            label(issuer)
        );
    }
    out.push_str("# HELP writ_identity_jwks_fetch_failures_total JWKS URL fetches that failed (the last good keys kept), by issuer.\n");
    out.push_str("# TYPE writ_identity_jwks_fetch_failures_total counter\n");
    for (issuer, _, failures, _) in &counts.jwks {
        let _ = writeln!(
            out,
            "writ_identity_jwks_fetch_failures_total{{issuer=\"{}\"}} {failures}",
            label(issuer)
        );
    }
    out.push_str("# HELP writ_identity_jwks_keys Keys held from a JWKS URL, by issuer (0: its tokens fail).\n");
    out.push_str("# TYPE writ_identity_jwks_keys gauge\n");
    for (issuer, _, _, keys) in &counts.jwks {
        let _ = writeln!(
            out,
            "writ_identity_jwks_keys{{issuer=\"{}\"}} {keys}",
            label(issuer)
        );
    }
}

/// A label value, escaped as the text format wants.
pub(crate) fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let metrics = Metrics::default();
        metrics.latency(Endpoint::Decide, Duration::from_micros(30));
        metrics.latency(Endpoint::Decide, Duration::from_micros(700));
        metrics.latency(Endpoint::Decide, Duration::from_secs(3));
        let loaded = Loaded::for_tests();
        let text = metrics.render(&loaded);
        assert!(
            text.contains(
                "writ_request_duration_seconds_bucket{endpoint=\"/v1/decide\",le=\"0.00005\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "writ_request_duration_seconds_bucket{endpoint=\"/v1/decide\",le=\"0.001\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "writ_request_duration_seconds_bucket{endpoint=\"/v1/decide\",le=\"+Inf\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("writ_request_duration_seconds_count{endpoint=\"/v1/decide\"} 3"));
    }

    #[test]
    fn counters_render_by_label() {
        let metrics = Metrics::default();
        metrics.decision(true);
        metrics.decision(false);
        metrics.decision(false);
        metrics.error(ErrorCode::Timeout);
        metrics.reload(false);
        let text = metrics.render(&Loaded::for_tests());
        assert!(text.contains("writ_decisions_total{outcome=\"allow\"} 1"));
        assert!(text.contains("writ_decisions_total{outcome=\"deny\"} 2"));
        assert!(text.contains("writ_request_errors_total{code=\"timeout\"} 1"));
        assert!(text.contains("writ_policy_reload_failures_total 1"));
        assert!(text.contains("writ_policy_reloads_total 0"));
    }
}
