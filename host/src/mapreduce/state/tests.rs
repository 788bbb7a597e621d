use super::*;

fn n(name: &str) -> NodeId {
    name.parse().expect("a node name")
}

fn up(s: &mut JobState, name: &str, slots: usize) -> Vec<Action> {
    s.on(
        Event::NodeUp {
            node: n(name),
            slots,
        },
        0,
    )
}

/// The (task, attempt, node) of each start.
fn starts(actions: &[Action]) -> Vec<(TaskId, u32, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start {
                task,
                attempt,
                node,
                ..
            } => Some((*task, *attempt, node.to_string())),
            _ => None,
        })
        .collect()
}

fn done(s: &mut JobState, task: TaskId, attempt: u32, now: u64) -> Vec<Action> {
    s.on(Event::Done { task, attempt }, now)
}

#[test]
fn maps_run_where_their_chunks_are_then_reducers_on_their_owners() {
    let mut s = JobState::new(
        vec![vec![n("a")], vec![n("b")], vec![n("a")]],
        vec![vec![n("b")], vec![n("a")]],
        Schedule::default(),
    );
    assert!(
        up(&mut s, "a", 1)
            .iter()
            .any(|a| matches!(a, Action::Start { .. }))
    );
    let started = starts(&up(&mut s, "b", 1));
    assert_eq!(started, vec![(TaskId::Map(1), 0, "b".into())]);
    // a ran map 0 when it came up (its chunk), b map 1; map 2 waits for a.
    let next = starts(&done(&mut s, TaskId::Map(1), 0, 10));
    assert_eq!(
        next,
        vec![],
        "b holds no other chunk and the wait has not run out"
    );
    let next = starts(&done(&mut s, TaskId::Map(0), 0, 20));
    assert_eq!(next, vec![(TaskId::Map(2), 0, "a".into())]);
    // Reducers start only once every map is done, each on its partition's owner.
    let next = starts(&done(&mut s, TaskId::Map(2), 0, 30));
    assert_eq!(
        next,
        vec![
            (TaskId::Reduce(1), 0, "a".into()),
            (TaskId::Reduce(0), 0, "b".into())
        ]
    );
    let p = s.progress();
    assert_eq!((p.maps_done, p.maps_local, p.maps_started), (3, 3, 3));
    assert_eq!(
        s.map_outputs(),
        vec![(0, 0, n("a")), (1, 0, n("b")), (2, 0, n("a"))]
    );
    assert_eq!(done(&mut s, TaskId::Reduce(0), 0, 40), vec![]);
    assert_eq!(
        done(&mut s, TaskId::Reduce(1), 0, 40),
        vec![Action::Succeed]
    );
    assert_eq!(done(&mut s, TaskId::Reduce(1), 0, 41), vec![]);
}

#[test]
fn a_task_waits_for_its_node_only_as_long_as_the_locality_wait() {
    let mut s = JobState::new(
        vec![vec![n("a")], vec![n("a")]],
        vec![vec![]],
        Schedule {
            locality_wait_ms: 100,
            ..Schedule::default()
        },
    );
    up(&mut s, "a", 1);
    assert_eq!(starts(&up(&mut s, "b", 1)), vec![]);
    assert_eq!(starts(&s.on(Event::Tick, 99)), vec![]);
    let late = s.on(Event::Tick, 100);
    assert_eq!(starts(&late), vec![(TaskId::Map(1), 0, "b".into())]);
    assert!(matches!(late[0], Action::Start { local: false, .. }));
    assert_eq!(s.progress().maps_local, 1);
}

#[test]
fn a_task_no_live_node_holds_runs_anywhere_at_once() {
    let mut s = JobState::new(vec![vec![n("gone")]], vec![vec![]], Schedule::default());
    assert_eq!(
        starts(&up(&mut s, "a", 2)),
        vec![(TaskId::Map(0), 0, "a".into())]
    );
}

#[test]
fn guest_failures_fail_the_job_sooner_than_node_failures() {
    let fail = |s: &mut JobState, attempt, guest| {
        s.on(
            Event::Failed {
                task: TaskId::Map(0),
                attempt,
                error: format!("failure {attempt}"),
                guest,
            },
            0,
        )
    };
    let mut s = JobState::new(vec![vec![]], vec![vec![]], Schedule::default());
    up(&mut s, "a", 1);
    assert_eq!(
        starts(&fail(&mut s, 0, true)),
        vec![(TaskId::Map(0), 1, "a".into())]
    );
    // A late report of the old attempt changes nothing.
    assert_eq!(done(&mut s, TaskId::Map(0), 0, 0), vec![]);
    assert_eq!(
        fail(&mut s, 1, true),
        vec![Action::Fail("failure 1".into())]
    );

    let mut s = JobState::new(vec![vec![]], vec![vec![]], Schedule::default());
    up(&mut s, "a", 1);
    for attempt in 0..MAX_ATTEMPTS - 1 {
        assert_eq!(starts(&fail(&mut s, attempt, false)).len(), 1);
    }
    assert_eq!(
        fail(&mut s, MAX_ATTEMPTS - 1, false),
        vec![Action::Fail(format!("failure {}", MAX_ATTEMPTS - 1))]
    );
    assert_eq!(s.progress().retries, MAX_ATTEMPTS - 1);
}

#[test]
fn a_node_going_down_reruns_its_tasks_and_the_map_output_it_held() {
    let mut s = JobState::new(
        vec![vec![n("a")], vec![n("b")]],
        vec![vec![n("a")]],
        Schedule::default(),
    );
    up(&mut s, "a", 1);
    up(&mut s, "b", 1);
    // Map 1 finishes on b; map 0 is still running on a when b goes down.
    done(&mut s, TaskId::Map(1), 0, 5);
    let after = starts(&s.on(Event::NodeDown { node: n("b") }, 6));
    assert_eq!(after, vec![], "a is busy with map 0");
    assert_eq!(s.progress().maps_recomputed, 1);
    // Map 1 runs again on a (its chunk's node is gone, so at once), then the reducer.
    assert_eq!(
        starts(&done(&mut s, TaskId::Map(0), 0, 7)),
        vec![(TaskId::Map(1), 1, "a".into())]
    );
    assert_eq!(
        starts(&done(&mut s, TaskId::Map(1), 1, 8)),
        vec![(TaskId::Reduce(0), 0, "a".into())]
    );
    // The reducer's node goes down too: with no node left nothing runs, until one comes.
    assert_eq!(s.on(Event::NodeDown { node: n("a") }, 9), vec![]);
    let back = starts(&up(&mut s, "c", 1));
    assert_eq!(
        back,
        vec![(TaskId::Map(0), 1, "c".into())],
        "a held every map output"
    );
    assert_eq!(s.progress().retries, 1, "the reducer on a failed");
}

#[test]
fn a_reducer_that_finds_map_output_gone_reruns_the_maps_without_counting_a_failure() {
    let mut s = JobState::new(vec![vec![], vec![]], vec![vec![]], Schedule::default());
    up(&mut s, "a", 2);
    done(&mut s, TaskId::Map(0), 0, 1);
    let r = starts(&done(&mut s, TaskId::Map(1), 0, 1));
    assert_eq!(r, vec![(TaskId::Reduce(0), 0, "a".into())]);
    let lost = Event::Lost {
        partition: 0,
        attempt: 0,
        maps: vec![1],
        error: "gone".into(),
    };
    assert!(s.is_current(&lost));
    assert_eq!(
        starts(&s.on(lost, 2)),
        vec![(TaskId::Map(1), 1, "a".into())]
    );
    assert_eq!(
        starts(&done(&mut s, TaskId::Map(1), 1, 3)),
        vec![(TaskId::Reduce(0), 1, "a".into())]
    );
    let p = s.progress();
    assert_eq!((p.retries, p.maps_recomputed), (0, 1));
}

#[test]
fn a_straggler_gets_one_copy_elsewhere_and_the_first_to_finish_counts() {
    let mut s = JobState::new(vec![vec![]; 4], vec![vec![]], Schedule::default());
    up(&mut s, "a", 2);
    up(&mut s, "b", 2);
    // Maps 0 and 2 on a, 1 and 3 on b (one per node per round).
    for (task, at) in [(0, 1000), (1, 1000), (2, 1100)] {
        done(&mut s, TaskId::Map(task), 0, at);
    }
    // Three of four done (the quantile), median 1000 ms: map 3 gets a copy on a after
    // 1.5 s, not before.
    assert_eq!(starts(&s.on(Event::Tick, 1499)), vec![]);
    let copy = s.on(Event::Tick, 1500);
    assert_eq!(starts(&copy), vec![(TaskId::Map(3), 1, "a".into())]);
    assert!(matches!(
        copy[0],
        Action::Start {
            speculative: true,
            ..
        }
    ));
    // Only one copy.
    assert_eq!(starts(&s.on(Event::Tick, 5000)), vec![]);
    // The copy finishes first: it is the output used; the original's report is ignored.
    let reduce = starts(&done(&mut s, TaskId::Map(3), 1, 5001));
    assert_eq!(reduce.len(), 1);
    assert!(s.map_outputs().contains(&(3, 1, n("a"))));
    assert!(!s.is_current(&Event::Done {
        task: TaskId::Map(3),
        attempt: 0
    }));
    assert_eq!(s.progress().speculative, 1);
}

#[test]
fn a_new_coordinator_starts_from_the_recorded_commits() {
    let mut s = JobState::new(
        vec![vec![], vec![]],
        vec![vec![], vec![]],
        Schedule::default(),
    );
    s.restore_map(0, 3, n("b"));
    s.restore_reduce(1);
    let started = starts(&up(&mut s, "a", 4));
    assert_eq!(started, vec![(TaskId::Map(1), 0, "a".into())]);
    assert_eq!(
        starts(&done(&mut s, TaskId::Map(1), 0, 1)),
        vec![(TaskId::Reduce(0), 0, "a".into())]
    );
    assert_eq!(s.map_outputs()[0], (0, 3, n("b")));
    assert_eq!(done(&mut s, TaskId::Reduce(0), 0, 2), vec![Action::Succeed]);
}

#[test]
fn empty_input_still_runs_a_reducer() {
    let mut s = JobState::new(vec![], vec![], Schedule::default());
    assert_eq!(
        starts(&up(&mut s, "a", 1)),
        vec![(TaskId::Reduce(0), 0, "a".into())]
    );
    assert_eq!(done(&mut s, TaskId::Reduce(0), 0, 1), vec![Action::Succeed]);
}

#[test]
fn reports_of_unknown_tasks_are_ignored() {
    let mut s = JobState::new(vec![vec![]], vec![vec![]], Schedule::default());
    up(&mut s, "a", 1);
    assert_eq!(done(&mut s, TaskId::Map(7), 0, 0), vec![]);
    assert_eq!(done(&mut s, TaskId::Reduce(0), 0, 0), vec![]);
    assert_eq!(s.on(Event::NodeDown { node: n("zz") }, 0), vec![]);
}

#[test]
fn a_reducer_reporting_maps_already_running_again_is_not_a_failure() {
    let mut s = JobState::new(vec![vec![]], vec![vec![]; 2], Schedule::default());
    up(&mut s, "a", 2);
    up(&mut s, "b", 2);
    // The map runs on a, then both reducers, one on each node.
    done(&mut s, TaskId::Map(0), 0, 1);
    // b goes down with its reducer, which runs again on a; then a goes down too, with the
    // map output: the map runs again on the node that comes next.
    s.on(Event::NodeDown { node: n("b") }, 2);
    s.on(Event::NodeDown { node: n("a") }, 3);
    assert_eq!(
        starts(&up(&mut s, "c", 1)),
        vec![(TaskId::Map(0), 1, "c".into())]
    );
    // A late report from a's reducer (found the output gone) changes nothing now.
    let late = Event::Lost {
        partition: 0,
        attempt: 0,
        maps: vec![0],
        error: "gone".into(),
    };
    assert_eq!(s.on(late, 4), vec![]);
    // Lost with their nodes: the reducer on b, then both on a (b's ran again there).
    assert_eq!(s.progress().retries, 3);
    assert_eq!(
        starts(&done(&mut s, TaskId::Map(0), 1, 5)),
        vec![(TaskId::Reduce(0), 1, "c".into())]
    );
}

#[test]
fn the_job_succeeds_once_every_reducer_committed_whatever_maps_run_again() {
    let mut s = JobState::new(vec![vec![], vec![]], vec![vec![]], Schedule::default());
    up(&mut s, "a", 1);
    up(&mut s, "b", 1);
    done(&mut s, TaskId::Map(0), 0, 1);
    done(&mut s, TaskId::Map(1), 0, 1);
    // The reducer runs on a (it has pulled everything); b goes down with map 1's output,
    // which runs again on a... but the reducer commits first: the job is done.
    let reducer_node = match s.on(Event::Tick, 2).first() {
        Some(Action::Start { node, .. }) => node.to_string(),
        _ => "a".into(),
    };
    let other = if reducer_node == "a" { "b" } else { "a" };
    s.on(Event::NodeDown { node: n(other) }, 3);
    assert_eq!(done(&mut s, TaskId::Reduce(0), 0, 4), vec![Action::Succeed]);
}

#[test]
fn a_losing_copy_keeps_its_slot_until_it_reports() {
    let mut s = JobState::new(vec![vec![]; 4], vec![vec![]], Schedule::default());
    up(&mut s, "a", 2);
    up(&mut s, "b", 2);
    for (task, at) in [(0, 1000), (1, 1000), (2, 1100)] {
        done(&mut s, TaskId::Map(task), 0, at);
    }
    // Map 3 (on b) gets a copy on a; the original finishes first.
    assert_eq!(
        starts(&s.on(Event::Tick, 1500)),
        vec![(TaskId::Map(3), 1, "a".into())]
    );
    let reduce = starts(&done(&mut s, TaskId::Map(3), 0, 1600));
    // a still runs the copy: the reducer (anywhere) goes to b, and a gets nothing more.
    assert_eq!(reduce, vec![(TaskId::Reduce(0), 0, "b".into())]);
    // The copy's late report frees a's slot and changes nothing else.
    assert_eq!(done(&mut s, TaskId::Map(3), 1, 1700), vec![]);
    assert_eq!(s.map_outputs()[3], (3, 0, n("b")));
}

#[test]
fn tasks_recorded_by_an_earlier_coordinator_do_not_set_the_speculation_median() {
    let mut s = JobState::new(vec![vec![]; 4], vec![vec![]], Schedule::default());
    for task in 0..3 {
        s.restore_map(task, 0, n("b"));
    }
    up(&mut s, "a", 1);
    up(&mut s, "b", 1);
    // Three of four maps are done, but none was timed here: map 3 gets no copy however long
    // it runs.
    assert_eq!(starts(&s.on(Event::Tick, 60_000)), vec![]);
    assert_eq!(s.progress().speculative, 0);
}
