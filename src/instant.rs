//! Instants: the one RFC 3339 parser, used by request validation and by
//! the checker (timestamp literals), below both.

/// An RFC 3339 timestamp as Unix nanoseconds.
pub fn parse_time(text: &str) -> Option<i128> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}
