//! The Kubernetes `metav1.Status` object written on the error stream.

use serde_json::json;

use crate::Error;

/// `{"metadata":{},"status":"Success"}`.
pub(crate) fn success() -> Vec<u8> {
    br#"{"metadata":{},"status":"Success"}"#.to_vec()
}

/// The status for a command that exited with `code` (non-zero).
pub(crate) fn exit_code(code: i32) -> Vec<u8> {
    let v = json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    });
    v.to_string().into_bytes()
}

/// The status for a session that failed before or while running.
pub(crate) fn failure(err: &Error) -> Vec<u8> {
    let message = err.to_string();
    let v = json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    });
    v.to_string().into_bytes()
}

/// The message of a failed status, for the v1–v3 protocols that carry plain text.
pub(crate) fn plain_message(status_json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(status_json).ok()?;
    if v.get("status")?.as_str()? == "Success" {
        return None;
    }
    Some(v.get("message")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_status_names_the_code_as_a_cause() {
        let v: serde_json::Value = serde_json::from_slice(&exit_code(3)).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn success_has_no_plain_message() {
        assert_eq!(plain_message(&success()), None);
        assert!(plain_message(&exit_code(1)).is_some());
    }
}
