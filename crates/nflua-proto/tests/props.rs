//! Property tests: encoders and decoders agree, and no input panics.

use nflua_proto::consts::{DATA_MAX, SCRIPT_MAX};
use nflua_proto::*;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.-]{1,63}"
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
        let mut exec = ExecuteReassembler::new();
        let mut list = ListReassembler::new(RecordFormat::Extended);
        for msg in messages(&bytes).flatten() {
            if let Ok(Request::Execute(f)) = Request::decode(&msg) {
                let _ = exec.push(msg.header.seq, &f);
            }
            if let Ok(Reply::List(f)) = Reply::decode(&msg) {
                let _ = list.push(&f);
            }
        }
    }

    #[test]
    fn arbitrary_payloads_behind_valid_headers_never_panic(
        ty in 0u16..40, flags in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..5000)
    ) {
        let mut b = Vec::new();
        emit_message(&mut b, ty, MsgFlags::from_bits_retain(flags), 1, 1, &[&payload]);
        for msg in messages(&b).flatten() {
            let _ = Request::decode(&msg);
            let _ = Reply::decode(&msg);
        }
    }

    #[test]
    fn execute_round_trip(
        state in name(), script_name in "[a-z./]{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..(SCRIPT_MAX / 3)), seq in any::<u32>()
    ) {
        let msgs = execute_messages(seq, 7, &state, &script_name, &body).unwrap();
        let mut r = ExecuteReassembler::new();
        let mut got = None;
        for m in &msgs {
            let msg = messages(m).next().unwrap().unwrap();
            let Request::Execute(f) = Request::decode(&msg).unwrap() else { panic!("not execute") };
            got = r.push(msg.header.seq, &f).unwrap();
        }
        let got = got.unwrap();
        prop_assert_eq!(got.state, state);
        prop_assert_eq!(got.body, body);
        let expected_name = if script_name.is_empty() { "=chunk".to_owned() } else { script_name };
        prop_assert_eq!(got.name, expected_name);
    }

    #[test]
    fn data_round_trip(state in name(), payload in proptest::collection::vec(any::<u8>(), 0..=DATA_MAX)) {
        let mut b = Vec::new();
        encode_data(&mut b, 3, 4, &state, &payload);
        let msg = messages(&b).next().unwrap().unwrap();
        prop_assert_eq!(Request::decode(&msg).unwrap(), Request::Data { name: &state, payload: &payload });
        prop_assert_eq!(Reply::decode(&msg).unwrap(), Reply::Data { state: &state, payload: &payload });
    }

    #[test]
    fn list_round_trip(n in 0usize..300, ext in any::<bool>()) {
        let format = if ext { RecordFormat::Extended } else { RecordFormat::Legacy };
        let recs: Vec<StateRecord> = (0..n).map(|i| StateRecord {
            name: format!("s{i}"), max_alloc: 65536, cur_alloc: i as u32,
            max_runs: ext.then_some(i as u32), flags: ext.then_some(StateFlags::empty()),
        }).collect();
        let mut r = ListReassembler::new(format);
        let mut got = None;
        for m in encode_list_reply(&recs, format, 1, 0) {
            let msg = messages(&m).next().unwrap().unwrap();
            let Reply::List(f) = Reply::decode(&msg).unwrap() else { panic!("not list") };
            got = r.push(&f).unwrap();
        }
        prop_assert_eq!(got.unwrap(), recs);
    }

    #[test]
    fn error_round_trip(errno in 1i32..4096, text in "[^\\x00]{0,300}") {
        let req = Header { len: 16, ty: 17, flags: 1, seq: 5, pid: 6 };
        let mut b = Vec::new();
        encode_error(&mut b, errno, &req, &text, 1);
        let msg = messages(&b).next().unwrap().unwrap();
        let Reply::Error(e) = Reply::decode(&msg).unwrap() else { panic!("not error") };
        prop_assert_eq!(e.errno, errno);
        prop_assert_eq!(e.message, Some(text.as_str()));
    }
}
