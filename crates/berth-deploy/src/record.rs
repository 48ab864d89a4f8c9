//! `AuditRecord`: the one shape of what berth appends to its audit log (deploy steps
//! and deploys, rollbacks, backups and their verification, restores, one-off runs,
//! secret changes, lock holds), written by every command and read back by `berth
//! serve`. Its JSON schema is committed as `schema/audit.schema.json` (`berth schema
//! audit`).
//!
//! The JSON is the one older berth wrote by hand: field names and values are kept, so
//! old audit logs still read. A record holds names, never values: no secret, no
//! environment.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One line of the audit log.
///
/// The schema allows no other field (berth writes none); reading is lenient, so a
/// record with a field this berth does not know still reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AuditRecord {
    /// What happened: `deploy` (a whole deploy or rollback), a deploy step (`lock`,
    /// `build`, `switch`, ...), `backup`, `backup-verify`, `restore`, `run`,
    /// `secrets-set`, `secrets-unset`, `secrets-import`, `lock-hold`, `lock-release`,
    /// `standby-stop` (an expired warm standby stopped).
    pub step: String,
    /// The product it happened to.
    pub product: String,
    /// Who did it (BERTH_OPERATOR, else git's user.name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// When it ended (UTC, `YYYY-MM-DDTHH:MM:SSZ`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// `ok` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ok", "failed"]))]
    pub result: Option<String>,
    /// Why it failed (secret values masked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The version (commit id prefix) deployed or run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The full commit id of a deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A deploy step as the plan printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// How long it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The deploy tag (empty before the tag step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The tasks a deploy shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<String>>,
    /// The step a failed deploy stopped at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// The deploy tag a rollback moved away from (null for a deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<Option<String>>,
    /// A backup file written, verified or restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// A backup's off-site copy (`[backup.offsite]`): `ok` (uploaded, size and sha256
    /// read back there) or `failed` (why in `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ok", "failed"]))]
    pub offsite: Option<String>,
    /// Where the off-site copy went: `<rclone remote>:<path>/<product>` (credentials
    /// stay in rclone's config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite_remote: Option<String>,
    /// The database a restore swapped out (kept under this name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_database: Option<String>,
    /// The secrets a `secrets` command changed: names only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// The service a one-off command ran in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The slot whose version it ran as (`blue` or `green`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["blue", "green"]))]
    pub slot: Option<String>,
    /// The command line of a one-off run (never its environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The exit code of a one-off run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why a lock is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AuditRecord {
    /// A record of `step` for `product`, by `operator`, stamped now.
    pub fn new(step: impl Into<String>, product: impl Into<String>, operator: &str) -> Self {
        Self {
            step: step.into(),
            product: product.into(),
            operator: Some(operator.to_string()),
            at: Some(now_stamp()),
            ..Self::default()
        }
    }

    /// Read a record back (a line of the local log, a row of the PostgreSQL store);
    /// `None` for JSON that is not a record.
    pub fn from_value(v: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an audit record serializes")
    }

    /// `ok` or `failed` from a result.
    pub fn set_result(&mut self, ok: bool) {
        self.result = Some(if ok { "ok" } else { "failed" }.to_string());
    }

    pub fn ok(&self) -> bool {
        self.result.as_deref() == Some("ok")
    }
}

/// Now, as records stamp it.
pub fn now_stamp() -> String {
    crate::tags::utc_stamp(berth_cmd::clock::now_unix()).1
}

/// The JSON schema of [`AuditRecord`], as committed in `schema/audit.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(AuditRecord);
    let mut s = serde_json::to_string_pretty(&schema).expect("schema serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records older berth wrote by hand read back as typed records, and a record
    /// written again keeps every field it had.
    #[test]
    fn old_records_read_and_keep_their_fields() {
        for line in [
            r#"{"product":"a","step":"deploy","result":"ok","version":"v1","at":"2026-01-01T00:00:00Z","tag":"a-deploy-1","operator":"o","tasks":["TASK-1-x"],"duration_ms":1500,"rollback_of":null,"commit":"abc"}"#,
            r#"{"product":"a","version":"v1","commit":"abc","operator":"o","step":"build","detail":"build v1","duration_ms":3,"at":"2026-01-01T00:00:00Z","tag":"","tasks":[],"result":"failed","error":"no"}"#,
            r#"{"step":"backup","product":"a","operator":"o","at":"2026-01-01T00:00:00Z","result":"ok","file":"/b/a.dump","bytes":12}"#,
            r#"{"step":"secrets-set","product":"a","names":["KEY"],"operator":"o","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"step":"restore","product":"a","operator":"o","at":"2026-01-01T00:00:00Z","file":"f","result":"ok","previous_database":"a_old"}"#,
        ] {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let r = AuditRecord::from_value(&v).unwrap_or_else(|| panic!("{line}"));
            let back = r.to_value();
            for (k, val) in v.as_object().unwrap() {
                assert_eq!(&back[k], val, "{k} of {line}");
            }
        }
    }
}
