//! Exit codes carry meaning: 0 success, 1 the check or operation failed,
//! 2 usage or configuration error.

use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: a flag, a file, the manifest. Exit 2.
    #[error("{0}")]
    Config(String),
    /// The operation ran and failed (a check found problems). Exit 1.
    #[error("{0}")]
    Failed(String),
    /// Problems were already printed; exit with this code.
    #[error("")]
    Reported(u8),
}

impl CliError {
    pub fn code(&self) -> ExitCode {
        match self {
            Self::Config(_) => ExitCode::from(2),
            Self::Failed(_) => ExitCode::from(1),
            Self::Reported(c) => ExitCode::from(*c),
        }
    }
}

impl From<berth_cmd::CmdError> for CliError {
    fn from(e: berth_cmd::CmdError) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<berth_git::GitError> for CliError {
    fn from(e: berth_git::GitError) -> Self {
        Self::Failed(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, CliError>;
