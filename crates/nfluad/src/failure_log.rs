//! One WARN line per failed request, with the original NFLua module's kernel-log text first and
//! ours after it: tools and tests written for the original read the log for those texts (its
//! own test suite does, after each request it expects to fail), and ours says what exactly went
//! wrong. Requests the original did not have (hooks, statistics) log our text alone.

use nflua_proto::errno;
use nflua_proto::MsgType;

/// The original module's text for a failure of a request of type `ty` (raw message type) with
/// `errno`, about `state` when the request names one.
pub(crate) fn original_text(ty: u16, errno: i32, state: Option<&str>) -> Option<String> {
    let kind = MsgType::from_u16(ty);
    let text = match (kind, errno) {
        (_, errno::EPERM | libc::EACCES) => "operation not permitted".to_owned(),
        (Some(MsgType::Create), errno::EEXIST) => format!("state already exists: {}", state.unwrap_or("")),
        (Some(MsgType::Create), _) => "max states limit reached or out of memory".to_owned(),
        (_, errno::ENOENT) if state.is_some() => "lua state not found".to_owned(),
        (_, errno::EMSGSIZE | libc::E2BIG) => "payload larger than allowed".to_owned(),
        (Some(MsgType::Execute), errno::EPROTO) => "NFLMSG_EXECUTE fragment out of order".to_owned(),
        (_, errno::EPROTO | errno::EBADMSG) => "netlink protocol out of sync".to_owned(),
        (Some(MsgType::Execute | MsgType::Data), _) => "could not execute / load data!".to_owned(),
        (Some(MsgType::Destroy), _) => "could not destroy lua state".to_owned(),
        _ => return None,
    };
    Some(text)
}

/// Logs a failed request of type `ty` from `port`.
pub(crate) fn warn(ty: u16, state: Option<&str>, port: u32, errno: i32, ours: &str) {
    match original_text(ty, errno, state) {
        Some(original) => tracing::warn!(port, errno, "{original}: {ours}"),
        None => tracing::warn!(port, errno, "request failed: {ours}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ty: MsgType, errno: i32, state: Option<&str>) -> Option<String> {
        original_text(ty.as_u16(), errno, state)
    }

    #[test]
    fn original_texts_by_request_and_errno() {
        assert_eq!(
            text(MsgType::Create, errno::EEXIST, Some("fw")).as_deref(),
            Some("state already exists: fw")
        );
        assert_eq!(
            text(MsgType::Create, errno::ENOSPC, Some("fw")).as_deref(),
            Some("max states limit reached or out of memory")
        );
        assert_eq!(text(MsgType::Execute, errno::ENOENT, Some("x")).as_deref(), Some("lua state not found"));
        assert_eq!(text(MsgType::Destroy, errno::ENOENT, Some("x")).as_deref(), Some("lua state not found"));
        assert_eq!(
            text(MsgType::Destroy, errno::EBUSY, Some("x")).as_deref(),
            Some("could not destroy lua state")
        );
        assert_eq!(
            text(MsgType::Execute, errno::EINVAL, Some("x")).as_deref(),
            Some("could not execute / load data!")
        );
        assert_eq!(
            text(MsgType::Execute, errno::EPROTO, None).as_deref(),
            Some("NFLMSG_EXECUTE fragment out of order")
        );
        assert_eq!(
            text(MsgType::Data, errno::EMSGSIZE, Some("x")).as_deref(),
            Some("payload larger than allowed")
        );
        assert_eq!(
            text(MsgType::List, errno::EBADMSG, None).as_deref(),
            Some("netlink protocol out of sync")
        );
        assert_eq!(text(MsgType::Destroy, errno::EPERM, None).as_deref(), Some("operation not permitted"));
        assert_eq!(text(MsgType::HookAdd, errno::EBUSY, None), None);
    }
}
