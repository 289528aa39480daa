//! Behaviours of the link, with explicit times: dialing and its backoff, heartbeats, the graceful leave
//! and every way it ends.

use super::*;

const LEAVE: Duration = Duration::from_secs(5);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn handled(acknowledge: bool, emptied: bool, lease: Option<Duration>) -> Input {
    Input::Handled {
        acknowledge,
        emptied,
        lease,
    }
}

fn refreshed(announcing: bool) -> Input {
    Input::Refreshed { announcing }
}

fn lost(ending: Ending, retry_in: Duration) -> Action {
    Action::Lost { ending, retry_in }
}

/// A link whose first dial opened a session at `t0`.
fn connected(t0: Instant) -> Link {
    let mut link = Link::new(LEAVE, t0);
    assert_eq!(link.feed(Input::Tick, t0), [Action::Connect]);
    assert_eq!(link.feed(Input::Opened, t0), []);
    link
}

/// A connected link that announces something, as after a snapshot and the refresh that follows.
fn announcing(t0: Instant) -> Link {
    let mut link = connected(t0);
    assert_eq!(link.feed(refreshed(true), t0), []);
    link
}

#[test]
fn a_new_link_dials_at_once_and_waits_for_the_dial() {
    let t0 = Instant::now();
    let mut link = Link::new(LEAVE, t0);
    assert_eq!(link.next_wake(), Some(t0));
    assert_eq!(link.feed(Input::Tick, t0), [Action::Connect]);
    assert_eq!(link.next_wake(), None, "nothing to time while dialing");
    assert_eq!(
        link.feed(Input::Tick, t0 + ms(10)),
        [],
        "one dial at a time"
    );
}

#[test]
fn failed_dials_back_off_from_50_ms_doubling_to_1_s() {
    let t0 = Instant::now();
    let mut link = Link::new(LEAVE, t0);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..7 {
        assert_eq!(link.feed(Input::Tick, now), [Action::Connect]);
        let actions = link.feed(Input::DialFailed("refused".into()), now);
        let [Action::Note(Note::DialFailed { error, retry_in })] = actions.as_slice() else {
            panic!("unexpected {actions:?}");
        };
        assert_eq!(error, "refused");
        assert_eq!(link.next_wake(), Some(now + *retry_in));
        assert_eq!(
            link.feed(Input::Tick, now + *retry_in - ms(1)),
            [],
            "no dial before the backoff's delay"
        );
        delays.push(retry_in.as_millis());
        now += *retry_in;
    }
    assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
}

#[test]
fn an_opened_session_resets_the_backoff() {
    let t0 = Instant::now();
    let mut link = Link::new(LEAVE, t0);
    link.feed(Input::Tick, t0);
    link.feed(Input::DialFailed("refused".into()), t0);
    link.feed(Input::Tick, t0 + ms(50));
    link.feed(Input::DialFailed("refused".into()), t0 + ms(50));
    link.feed(Input::Tick, t0 + ms(150));
    assert_eq!(link.feed(Input::Opened, t0 + ms(150)), []);
    assert_eq!(
        link.feed(Input::Ended(Ending::Closed), t0 + ms(200)),
        [lost(Ending::Closed, ms(50))]
    );
}

#[test]
fn the_controller_closing_the_session_reconnects_with_backoff() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    let t1 = t0 + ms(300);
    assert_eq!(
        link.feed(Input::Ended(Ending::Closed), t1),
        [lost(Ending::Closed, ms(50))]
    );
    assert_eq!(link.next_wake(), Some(t1 + ms(50)));
    assert_eq!(link.feed(Input::Tick, t1 + ms(50)), [Action::Connect]);
    assert_eq!(
        link.feed(Input::DialFailed("refused".into()), t1 + ms(60)),
        [Action::Note(Note::DialFailed {
            error: "refused".into(),
            retry_in: ms(100)
        })],
        "the backoff goes on from the loss"
    );
}

#[test]
fn a_broken_stream_or_a_failed_send_also_reconnect_with_backoff() {
    let t0 = Instant::now();
    for ending in [
        Ending::Broke("reset".into()),
        Ending::QueueClosed("channel closed".into()),
        Ending::QueueFull("no available capacity".into()),
    ] {
        let mut link = announcing(t0);
        assert_eq!(
            link.feed(Input::Ended(ending.clone()), t0),
            [lost(ending, ms(50))]
        );
        assert!(!link.is_stopped());
        assert_eq!(link.feed(Input::Tick, t0 + ms(50)), [Action::Connect]);
    }
}

#[test]
fn only_our_own_stuck_queue_is_an_ending_not_made_by_the_controller() {
    assert!(Ending::Closed.by_controller());
    assert!(Ending::Broke("reset".into()).by_controller());
    assert!(Ending::QueueClosed("channel closed".into()).by_controller());
    assert!(!Ending::QueueFull("no available capacity".into()).by_controller());
}

#[test]
fn endings_read_as_the_reasons_logged() {
    assert_eq!(
        Ending::Closed.to_string(),
        "the controller closed the session"
    );
    assert_eq!(
        Ending::Broke("status: Unavailable".into()).to_string(),
        "the session broke: status: Unavailable"
    );
    assert_eq!(
        Ending::QueueFull("no available capacity".into()).to_string(),
        "cannot queue a message: no available capacity"
    );
    assert_eq!(
        Ending::QueueClosed("channel closed".into()).to_string(),
        "cannot queue a message: channel closed"
    );
}

#[test]
fn heartbeats_go_every_second_before_any_lease() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    assert_eq!(link.next_wake(), Some(t0 + DEFAULT_HEARTBEAT));
    assert_eq!(link.feed(Input::Tick, t0 + ms(999)), []);
    assert_eq!(
        link.feed(Input::Tick, t0 + ms(1000)),
        [Action::SendHeartbeat]
    );
    assert_eq!(link.next_wake(), Some(t0 + ms(2000)));
}

#[test]
fn heartbeats_go_every_fifth_of_the_lease_once_one_is_known() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    assert_eq!(
        link.feed(handled(false, false, Some(ms(1000))), t0 + ms(10)),
        [],
        "a renewal is not acknowledged"
    );
    assert_eq!(
        link.next_wake(),
        Some(t0 + ms(1000)),
        "the heartbeat already timed keeps its time"
    );
    assert_eq!(
        link.feed(Input::Tick, t0 + ms(1000)),
        [Action::SendHeartbeat]
    );
    assert_eq!(link.next_wake(), Some(t0 + ms(1200)));
}

#[test]
fn heartbeats_never_come_more_often_than_every_10_ms() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    assert_eq!(
        link.feed(handled(true, false, Some(ms(20))), t0),
        [Action::SendHeartbeat]
    );
    assert_eq!(link.next_wake(), Some(t0 + ms(10)));
}

#[test]
fn an_applied_set_or_delta_is_acknowledged_at_once_and_the_next_heartbeat_counts_from_there() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    let t1 = t0 + ms(700);
    assert_eq!(
        link.feed(handled(true, false, Some(ms(2000))), t1),
        [Action::SendHeartbeat]
    );
    assert_eq!(link.next_wake(), Some(t1 + ms(400)));
}

#[test]
fn the_lease_told_before_a_session_opens_times_its_first_heartbeat() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.feed(handled(true, false, Some(ms(500))), t0);
    link.feed(Input::Ended(Ending::Closed), t0 + ms(10));
    link.feed(Input::Tick, t0 + ms(60));
    let t1 = t0 + ms(70);
    link.feed(Input::Opened, t1);
    assert_eq!(link.next_wake(), Some(t1 + ms(100)));
}

#[test]
fn nothing_is_acknowledged_or_sent_without_a_session() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.feed(Input::Ended(Ending::QueueFull("full".into())), t0);
    assert_eq!(link.feed(handled(true, false, Some(ms(1000))), t0), []);
    assert_eq!(link.next_wake(), Some(t0 + ms(50)), "only the next dial");
}

#[test]
fn an_emptied_set_while_running_is_only_acknowledged() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    assert_eq!(
        link.feed(handled(true, true, Some(ms(1000))), t0),
        [Action::SendHeartbeat]
    );
    assert!(!link.is_stopped());
}

#[test]
fn refreshes_while_running_never_stop_anything() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.feed(Input::Ended(Ending::Closed), t0);
    assert_eq!(link.feed(refreshed(false), t0), []);
    assert!(!link.is_stopped());
    assert_eq!(link.feed(Input::Tick, t0 + ms(50)), [Action::Connect]);
}

#[test]
fn shutdown_with_no_session_and_nothing_announced_stops_at_once() {
    let t0 = Instant::now();
    let mut idle = Link::new(LEAVE, t0);
    assert_eq!(
        idle.feed(Input::Shutdown, t0),
        [Action::Note(Note::NothingToHandOver)]
    );
    assert!(idle.is_stopped());
    assert_eq!(idle.next_wake(), None);

    let mut dialing = Link::new(LEAVE, t0);
    dialing.feed(Input::Tick, t0);
    assert_eq!(
        dialing.feed(Input::Shutdown, t0),
        [Action::Note(Note::NothingToHandOver)],
        "a dial under way is no session"
    );
    assert!(dialing.is_stopped());
}

#[test]
fn shutdown_with_a_session_sends_leaving_and_waits_at_most_the_leave_timeout() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    assert_eq!(
        link.feed(Input::Shutdown, t0),
        [Action::Note(Note::Leaving), Action::SendLeaving],
        "even with nothing announced: the controller is told"
    );
    assert!(link.is_leaving());
    assert_eq!(link.leave_deadline(), Some(t0 + LEAVE));
    assert_eq!(
        link.feed(Input::Tick, t0 + ms(1000)),
        [Action::SendHeartbeat],
        "heartbeats go on while leaving"
    );
    assert_eq!(
        link.feed(refreshed(false), t0 + ms(1000)),
        [],
        "with a session, the controller's word is awaited"
    );
    assert_eq!(
        link.feed(Input::Tick, t0 + LEAVE - ms(1)),
        [Action::SendHeartbeat]
    );
    assert_eq!(
        link.feed(Input::Tick, t0 + LEAVE),
        [Action::Note(Note::LeaveTimedOut)]
    );
    assert!(link.is_stopped());
    assert_eq!(link.next_wake(), None);
}

#[test]
fn shutdown_is_taken_in_once() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Shutdown, t0);
    assert_eq!(link.feed(Input::Shutdown, t0 + ms(100)), []);
    assert_eq!(
        link.leave_deadline(),
        Some(t0 + LEAVE),
        "the deadline is not pushed back"
    );
}

#[test]
fn the_leave_deadline_comes_before_a_heartbeat_due_at_the_same_time() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.feed(Input::Shutdown, t0 + ms(500));
    assert_eq!(
        link.feed(Input::Tick, t0 + ms(500) + LEAVE),
        [Action::Note(Note::LeaveTimedOut)]
    );
}

#[test]
fn leaving_ends_with_a_close_once_the_controller_moved_everything_away() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Shutdown, t0);
    assert_eq!(
        link.feed(handled(true, true, Some(ms(1000))), t0 + ms(300)),
        [
            Action::SendHeartbeat,
            Action::Note(Note::MovedAway),
            Action::Close
        ],
        "acknowledged first, then closed"
    );
    assert!(link.is_stopped());
}

#[test]
fn a_set_that_still_holds_something_does_not_end_the_leave() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Shutdown, t0);
    assert_eq!(
        link.feed(handled(true, false, Some(ms(1000))), t0 + ms(300)),
        [Action::SendHeartbeat]
    );
    assert_eq!(link.feed(handled(false, false, None), t0 + ms(400)), []);
    assert!(!link.is_stopped());
}

#[test]
fn shutdown_with_no_session_while_announcing_reconnects_to_hand_the_addresses_over() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Ended(Ending::Closed), t0);
    let t1 = t0 + ms(10);
    assert_eq!(
        link.feed(Input::Shutdown, t1),
        [Action::Note(Note::HandingOver)]
    );
    assert!(!link.is_stopped());
    assert_eq!(link.leave_deadline(), Some(t1 + LEAVE));
    assert_eq!(link.next_wake(), Some(t0 + ms(50)), "the dial already due");
    assert_eq!(link.feed(Input::Tick, t0 + ms(50)), [Action::Connect]);
    assert_eq!(
        link.feed(Input::DialFailed("refused".into()), t0 + ms(60)),
        [Action::Note(Note::DialFailed {
            error: "refused".into(),
            retry_in: ms(100)
        })]
    );
    assert_eq!(link.feed(Input::Tick, t0 + ms(160)), [Action::Connect]);
    assert_eq!(
        link.feed(Input::Opened, t0 + ms(170)),
        [
            Action::Note(Note::ReconnectedWhileLeaving),
            Action::SendLeaving
        ]
    );
    assert_eq!(
        link.feed(handled(true, true, Some(ms(1000))), t0 + ms(200)),
        [
            Action::SendHeartbeat,
            Action::Note(Note::MovedAway),
            Action::Close
        ]
    );
}

#[test]
fn a_handover_dial_that_never_succeeds_ends_at_the_leave_timeout() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Ended(Ending::Closed), t0);
    link.feed(Input::Shutdown, t0);
    assert_eq!(
        link.next_wake(),
        Some(t0 + ms(50)),
        "the next dial, before the deadline"
    );
    link.feed(Input::Tick, t0 + ms(50));
    link.feed(Input::DialFailed("refused".into()), t0 + ms(50));
    assert_eq!(
        link.feed(Input::Tick, t0 + LEAVE),
        [Action::Note(Note::LeaveTimedOut)]
    );
}

#[test]
fn the_stream_ending_while_leaving_with_nothing_announced_stops_at_once() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.feed(Input::Shutdown, t0);
    assert_eq!(
        link.feed(Input::Ended(Ending::Closed), t0 + ms(100)),
        [lost(Ending::Closed, ms(50))]
    );
    assert!(link.is_stopped());
}

#[test]
fn the_stream_ending_while_leaving_with_addresses_announced_reconnects_to_hand_them_over() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Shutdown, t0);
    let broke = Ending::Broke("reset".into());
    assert_eq!(
        link.feed(Input::Ended(broke.clone()), t0 + ms(100)),
        [lost(broke, ms(50))]
    );
    assert!(!link.is_stopped());
    assert_eq!(link.feed(Input::Tick, t0 + ms(150)), [Action::Connect]);
}

#[test]
fn once_leaving_without_a_session_the_first_refresh_with_nothing_announced_stops() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Shutdown, t0);
    link.feed(Input::Ended(Ending::Broke("reset".into())), t0);
    link.feed(Input::Tick, t0 + ms(50));
    assert_eq!(link.feed(refreshed(true), t0 + ms(60)), []);
    assert_eq!(
        link.feed(refreshed(false), t0 + ms(70)),
        [Action::Note(Note::NothingLeft)],
        "a dial under way is no session"
    );
    assert!(link.is_stopped());
}

#[test]
fn a_send_failing_while_leaving_waits_for_the_next_refresh_to_stop() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    link.feed(Input::Shutdown, t0);
    let full = Ending::QueueFull("no available capacity".into());
    assert_eq!(
        link.feed(Input::Ended(full.clone()), t0),
        [lost(full, ms(50))]
    );
    assert!(!link.is_stopped());
    assert_eq!(
        link.next_wake(),
        Some(t0 + LEAVE),
        "nothing announced: no dial"
    );
    assert_eq!(link.feed(Input::Tick, t0 + ms(50)), []);
    assert_eq!(
        link.feed(refreshed(false), t0 + ms(50)),
        [Action::Note(Note::NothingLeft)]
    );
}

#[test]
fn a_session_lost_while_the_last_actions_are_carried_out_is_still_accounted_for() {
    let t0 = Instant::now();
    let mut link = announcing(t0);
    link.feed(Input::Shutdown, t0);
    link.feed(handled(true, true, Some(ms(1000))), t0);
    assert!(link.is_stopped());
    let closed = Ending::QueueClosed("channel closed".into());
    assert_eq!(
        link.feed(Input::Ended(closed.clone()), t0),
        [lost(closed, ms(50))]
    );
    assert!(link.is_stopped());
}

#[test]
fn a_stopped_link_takes_nothing_else_in() {
    let t0 = Instant::now();
    let mut link = Link::new(LEAVE, t0);
    link.feed(Input::Tick, t0);
    link.feed(Input::Shutdown, t0);
    for input in [
        Input::Opened,
        Input::DialFailed("refused".into()),
        handled(true, true, None),
        refreshed(true),
        Input::Shutdown,
        Input::Tick,
    ] {
        assert_eq!(link.feed(input, t0 + ms(10)), []);
    }
    assert_eq!(link.next_wake(), None);
}

#[tokio::test(start_paused = true)]
async fn timers_follow_the_runtime_clock() {
    let t0 = Instant::now();
    let mut link = connected(t0);
    let wake = link.next_wake().unwrap_or(t0);
    tokio::time::sleep_until(wake).await;
    assert_eq!(
        link.feed(Input::Tick, Instant::now()),
        [Action::SendHeartbeat]
    );
    assert_eq!(Instant::now() - t0, DEFAULT_HEARTBEAT);
}
