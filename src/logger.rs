//! Bridges LDK's logger to the `log` crate, so applications pick their own backend.

use lightning::util::logger::{Level, Logger, Record};

/// Forwards LDK log records to the [`log`] facade under the target `ldk::<module>`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LdkLogger;

impl Logger for LdkLogger {
    fn log(&self, record: Record) {
        let level = match record.level {
            Level::Gossip | Level::Trace => log::Level::Trace,
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        if log::log_enabled!(target: "ldk", level) {
            log::log!(target: "ldk", level, "{}:{} {}", record.module_path, record.line, record.args);
        }
    }
}
