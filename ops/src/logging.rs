//! `tracing` set-up: one subscriber for the whole process, human-readable or JSON.

use tracing_subscriber::EnvFilter;

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event, fields at the top level, for log pipelines.
    Json,
}

/// The log filter could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The `--log-filter` value is not valid EnvFilter syntax.
    #[error("--log-filter {filter:?} is invalid: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A subscriber was already installed in this process.
    #[error("logging was already initialised: {0}")]
    AlreadySet(String),
}

/// Installs the process-wide subscriber.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stdout);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| LoggingError::AlreadySet(e.to_string()))
}
