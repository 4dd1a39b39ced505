//! 2019-era clients: 72-byte CREATE, LIST without EXT.

use nflua_client::{RecordFormat, StateRecord};

use crate::util::Daemon;

#[test]
fn legacy_create_gets_the_default_maxruns() {
    let d = Daemon::start_with(&["--default-maxruns", "4242"]);
    let mut c = d.control();
    let record =
        StateRecord { name: "old".into(), max_alloc: 70_000, cur_alloc: 0, max_runs: None, flags: None };
    c.send_create_record(&record, RecordFormat::Legacy).unwrap();
    c.wait(5000).unwrap();
    let states = c.list().unwrap();
    assert_eq!(states[0].max_runs, Some(4242));
    assert_eq!(states[0].max_alloc, 70_000);
}

#[test]
fn list_without_ext_answers_legacy_records() {
    let d = Daemon::start();
    for i in 0..60 {
        d.create(&format!("st{i}"));
    }
    let mut c = d.control();
    c.set_extended_list(false);
    let states = c.list().unwrap();
    assert_eq!(states.len(), 60);
    assert!(states.iter().all(|s| s.max_runs.is_none()), "legacy records carry no maxruns");
}
