//! The engine keeps its own copies of a few protocol facts (it does not depend on the wire
//! format crate); they are pinned to the protocol's here, where both are in reach.

#[cfg(test)]
mod tests {
    use nflua_engine::{EngineError, DATA_MAX_SIZE, STATE_NAME_MAX_BYTES};
    use nflua_proto::consts::{DATA_MAX, DEFAULT_CHUNK_NAME, STATE_NAME_MAX};
    use nflua_proto::errno;

    #[test]
    fn engine_limits_are_the_protocols() {
        assert_eq!(DATA_MAX_SIZE, DATA_MAX);
        assert_eq!(STATE_NAME_MAX_BYTES, STATE_NAME_MAX - 1, "the name field holds a NUL too");
        assert_eq!(DEFAULT_CHUNK_NAME, "=chunk");
        for name in ["", "a", &"x".repeat(63), &"x".repeat(64), "a\0b"] {
            assert_eq!(
                nflua_engine::check_state_name(name).is_ok(),
                nflua_proto::name::check_state_name(name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_transport_speaks_the_protocols_netlink_family() {
        assert_eq!(nflua_netlink::NETLINK_USERSOCK, nflua_proto::consts::NETLINK_USERSOCK);
    }

    #[test]
    fn engine_errnos_are_the_protocols() {
        let cases = [
            (EngineError::Exists("a".into()), errno::EEXIST),
            (EngineError::NotFound("a".into()), errno::ENOENT),
            (EngineError::Busy("a".into()), errno::EBUSY),
            (EngineError::TooManyStates(1), errno::ENOSPC),
            (EngineError::Lua("x".into()), errno::EIO),
        ];
        for (error, expected) in cases {
            assert_eq!(error.errno(), expected, "{error}");
        }
    }
}
