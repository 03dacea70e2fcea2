//! The tracing subscriber, set up once by each binary.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Library targets kept to errors unless the filter names them: netlink-packet-route
/// warns on every link dump that the kernel sent attribute data newer than the crate
/// knows (four warnings per pod started on this kernel), which says nothing about the node.
const QUIET_TARGETS: &[&str] = &["netlink_packet_route"];

/// Installs the global subscriber writing to stderr. `level` is a tracing filter
/// (`info`, `debug,h2=info`, ...); an invalid filter is an error naming it.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| format!("install log subscriber: {e}"))
}

/// `level` as a filter, with [`QUIET_TARGETS`] at `error` unless `level` names them.
fn filter(level: &str) -> Result<EnvFilter, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("invalid --log-level {level:?}: {e}");
    let mut filter = EnvFilter::try_new(level).map_err(|e| invalid(&e))?;
    for target in QUIET_TARGETS.iter().filter(|t| !level.contains(**t)) {
        let directive = format!("{target}=error").parse().map_err(|e| invalid(&e))?;
        filter = filter.add_directive(directive);
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_chatter_is_quiet_unless_asked_for() {
        let quiet = filter("debug").unwrap().to_string();
        assert!(quiet.contains("netlink_packet_route=error"), "{quiet}");
        let asked = filter("info,netlink_packet_route=debug")
            .unwrap()
            .to_string();
        assert!(!asked.contains("netlink_packet_route=error"), "{asked}");
        assert!(filter("info,[").is_err());
    }
}
