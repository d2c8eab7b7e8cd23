//! Round trips of every message, framing limits, and the client against a scripted launcher.

use super::*;

fn round_trip_worker(m: WorkerMsg) {
    let frame = m.encode();
    let body = read_frame(&mut &frame[..]).unwrap().unwrap();
    assert_eq!(WorkerMsg::decode(&body).unwrap(), m);
}

fn round_trip_launcher(m: LauncherMsg) {
    let frame = m.encode();
    let body = read_frame(&mut &frame[..]).unwrap().unwrap();
    assert_eq!(LauncherMsg::decode(&body).unwrap(), m);
}

#[test]
fn every_message_round_trips() {
    round_trip_worker(WorkerMsg::Hello {
        version: PROTOCOL_VERSION,
        rank: 3,
        pid: 4242,
        cpus: "0-3,64-67".into(),
        device: "cuda:1".into(),
    });
    round_trip_worker(WorkerMsg::Heartbeat(Progress {
        step: 10,
        total_steps: 100,
        epoch: 2,
        loss: 0.25,
        samples_per_sec: 123.5,
        phase: Phase::CheckpointCommit,
        beat: 77,
        compute_ms: 512.5,
    }));
    for p in Phase::ALL {
        assert_eq!(Phase::from_u8(p.to_u8()), p);
    }
    round_trip_worker(WorkerMsg::NcclId((0..128).collect()));
    round_trip_worker(WorkerMsg::WantNcclId);
    round_trip_worker(WorkerMsg::AllReduce {
        seq: 7,
        data: vec![1.0, -0.0, f32::MAX],
    });
    round_trip_worker(WorkerMsg::Broadcast {
        seq: 8,
        data: vec![0, 255, 10],
    });
    round_trip_worker(WorkerMsg::Barrier { seq: 9 });
    round_trip_worker(WorkerMsg::CheckpointCommitted {
        step: 5,
        path: "ck/é".into(),
    });
    round_trip_worker(WorkerMsg::Goodbye {
        code: -9,
        reason: "done".into(),
    });
    round_trip_launcher(LauncherMsg::Welcome {
        attempt: 2,
        world_size: 16,
    });
    round_trip_launcher(LauncherMsg::NcclId(vec![1; 128]));
    round_trip_launcher(LauncherMsg::AllReduced {
        seq: 1,
        data: vec![],
    });
    round_trip_launcher(LauncherMsg::Broadcasted {
        seq: 2,
        data: vec![9],
    });
    round_trip_launcher(LauncherMsg::BarrierDone { seq: 3 });
    round_trip_launcher(LauncherMsg::Preempt {
        deadline_ms: 60_000,
    });
    round_trip_launcher(LauncherMsg::Failed {
        msg: "rank 2 timed out".into(),
    });
    round_trip_worker(WorkerMsg::Standby {
        step: 30,
        checksum: u64::MAX - 1,
    });
    round_trip_worker(WorkerMsg::State {
        checksum: 7,
        data: vec![1, 2, 3],
    });
    round_trip_worker(WorkerMsg::WantState);
    round_trip_launcher(LauncherMsg::PeerLost {
        rank: 1,
        msg: "killed by signal 9".into(),
    });
    round_trip_launcher(LauncherMsg::SendState);
    round_trip_launcher(LauncherMsg::State {
        checksum: 7,
        data: vec![0; 5],
    });
    round_trip_launcher(LauncherMsg::Resume {
        attempt: 1,
        lost_rank: 1,
        cause: "exit code 3".into(),
        millis: 1234,
    });
}

#[test]
fn fnv1a64_matches_the_published_vectors() {
    assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(super::fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn f32_payloads_are_bit_exact() {
    let data = vec![f32::NAN, f32::INFINITY, -f32::MIN_POSITIVE, 1e-45, 0.1];
    let frame = WorkerMsg::AllReduce {
        seq: 1,
        data: data.clone(),
    }
    .encode();
    // header: 4 length + 1 tag + 8 seq + 4 count, then raw little-endian values
    assert_eq!(frame.len(), 17 + 4 * data.len());
    assert_eq!(&frame[17..21], &f32::NAN.to_le_bytes());
    let body = read_frame(&mut &frame[..]).unwrap().unwrap();
    let WorkerMsg::AllReduce { data: back, .. } = WorkerMsg::decode(&body).unwrap() else {
        panic!("wrong message");
    };
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&data));
}

#[test]
fn bad_frames_are_errors_not_panics() {
    assert!(WorkerMsg::decode(&[]).is_err());
    assert!(WorkerMsg::decode(&[200])
        .unwrap_err()
        .0
        .contains("unknown worker message tag"));
    let frame = WorkerMsg::Barrier { seq: 1 }.encode();
    assert!(WorkerMsg::decode(&frame[4..frame.len() - 1])
        .unwrap_err()
        .0
        .contains("truncated"));
    let mut long = frame[4..].to_vec();
    long.push(0);
    assert!(WorkerMsg::decode(&long).unwrap_err().0.contains("trailing"));
    // a huge length prefix is refused before allocating
    let huge = (u32::MAX).to_le_bytes();
    assert!(read_frame(&mut &huge[..]).is_err());
    // a stream cut inside a frame is an error, at a boundary a clean end
    assert!(read_frame(&mut &frame[..3]).is_err());
    assert!(read_frame(&mut &[][..]).unwrap().is_none());
    // a count larger than the frame
    let mut lying = WorkerMsg::AllReduce {
        seq: 1,
        data: vec![1.0],
    }
    .encode()[4..]
        .to_vec();
    lying[9..13].copy_from_slice(&1000u32.to_le_bytes());
    assert!(WorkerMsg::decode(&lying).is_err());
}
