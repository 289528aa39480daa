use super::*;

const CHECK: Duration = Duration::from_secs(60);

fn key(name: &str) -> ServiceKey {
    ServiceKey::new("web", name)
}

fn keys(names: &[&str]) -> BTreeSet<ServiceKey> {
    names.iter().map(|n| key(n)).collect()
}

fn leading(now: Instant) -> Schedule {
    let mut schedule = Schedule::new(CHECK);
    schedule.start_leading(now);
    let first = schedule.next_pass().unwrap();
    assert_eq!(first.order, Order::Full { check: false });
    schedule
}

#[test]
fn changed_services_are_passed_alone_and_announcements_with_an_empty_set() {
    let t0 = Instant::now();
    let mut schedule = leading(t0);
    assert_eq!(schedule.next_pass(), None, "nothing changed");
    schedule.change(Change::Service(key("a")), t0 + Duration::from_millis(5));
    schedule.change(Change::Service(key("b")), t0 + Duration::from_millis(7));
    schedule.change(Change::Service(key("a")), t0 + Duration::from_millis(9));
    let pass = schedule.next_pass().unwrap();
    assert_eq!(pass.order, Order::Services(keys(&["a", "b"])));
    assert_eq!(pass.first_change, t0 + Duration::from_millis(5));
    assert!(!pass.acknowledgements);

    schedule.change(Change::Announced, t0 + Duration::from_millis(20));
    let pass = schedule.next_pass().unwrap();
    assert_eq!(pass.order, Order::Services(BTreeSet::new()));
    assert!(pass.acknowledgements);
    schedule.change(Change::Service(key("a")), t0 + Duration::from_millis(30));
    assert!(
        !schedule.next_pass().unwrap().acknowledgements,
        "acknowledgements are compared only when they changed"
    );
}

#[test]
fn a_change_only_a_full_pass_takes_in_covers_the_services_changed_with_it() {
    let t0 = Instant::now();
    let mut schedule = leading(t0);
    schedule.change(Change::Service(key("a")), t0);
    schedule.change(Change::Everything, t0 + Duration::from_millis(1));
    assert_eq!(
        schedule.next_pass().unwrap().order,
        Order::Full { check: false }
    );
    assert_eq!(schedule.next_pass(), None);
}

#[test]
fn while_writes_are_in_flight_only_speaker_changes_pass_and_the_rest_is_passed_after() {
    let t0 = Instant::now();
    let mut schedule = leading(t0);
    schedule.writing_started();
    schedule.change(Change::Service(key("a")), t0 + Duration::from_millis(1));
    assert_eq!(schedule.next_pass(), None, "waits for the batch");
    assert!(!schedule.may_write());

    schedule.change(Change::Speakers, t0 + Duration::from_millis(2));
    let urgent = schedule.next_pass().unwrap();
    assert_eq!(urgent.order, Order::Full { check: false });
    // Its writes cannot start beside the batch: deferred, then passed again once the batch is done.
    schedule.defer(&Coverage::Only(keys(&["b"])), urgent.first_change);
    assert_eq!(schedule.next_pass(), None);

    schedule.change(Change::Service(key("c")), t0 + Duration::from_millis(3));
    assert_eq!(
        schedule.written(BTreeSet::new(), false, t0, t0 + Duration::from_millis(4)),
        None
    );
    let after = schedule.next_pass().unwrap();
    assert_eq!(after.order, Order::Services(keys(&["b", "c"])));
    assert_eq!(after.first_change, t0 + Duration::from_millis(1));
    assert!(schedule.may_write());
}

#[test]
fn failed_writes_are_retried_with_a_doubling_delay_that_resets_after_a_success() {
    let t0 = Instant::now();
    let mut schedule = leading(t0);
    let mut now = t0;
    for expected in [500, 1000, 2000] {
        schedule.writing_started();
        let delay = schedule.written(keys(&["a"]), false, t0, now).unwrap();
        assert_eq!(delay, Duration::from_millis(expected));
        assert!(!schedule.may_write(), "no writes while backing off");
        assert_eq!(schedule.next_pass(), None, "the failed Service waits");
        assert_eq!(schedule.wake_at(), Some(now + delay));
        now += delay;
        schedule.tick(now);
        let retry = schedule.next_pass().unwrap();
        assert_eq!(retry.order, Order::Services(keys(&["a"])));
        assert_eq!(retry.first_change, t0, "measured from the first change");
    }
    schedule.writing_started();
    assert_eq!(schedule.written(BTreeSet::new(), false, t0, now), None);
    schedule.writing_started();
    let delay = schedule.written(BTreeSet::new(), true, t0, now).unwrap();
    assert_eq!(delay, Duration::from_millis(500), "reset by the success");
    schedule.tick(now + delay);
    assert_eq!(
        schedule.next_pass().unwrap().order,
        Order::Services(BTreeSet::new()),
        "a failed pool status is written by any pass"
    );
}

#[test]
fn the_consistency_check_runs_on_the_clock_after_pending_changes() {
    let t0 = Instant::now();
    let mut schedule = leading(t0);
    assert_eq!(schedule.wake_at(), Some(t0 + CHECK));
    schedule.tick(t0 + CHECK - Duration::from_millis(1));
    assert_eq!(schedule.next_pass(), None);

    schedule.change(Change::Service(key("a")), t0 + CHECK);
    schedule.tick(t0 + CHECK);
    assert_eq!(schedule.wake_at(), Some(t0 + CHECK * 2));
    assert_eq!(
        schedule.next_pass().unwrap().order,
        Order::Services(keys(&["a"])),
        "changes first, so that the check measures only drift"
    );
    assert_eq!(
        schedule.next_pass().unwrap().order,
        Order::Full { check: true }
    );
    assert_eq!(schedule.next_pass(), None);

    // A full pass asked for by a change does the check's work.
    schedule.tick(t0 + CHECK * 2);
    schedule.change(Change::Everything, t0 + CHECK * 2);
    assert_eq!(
        schedule.next_pass().unwrap().order,
        Order::Full { check: false }
    );
    assert_eq!(schedule.next_pass(), None);
}

#[test]
fn losing_leadership_forgets_everything_due() {
    let t0 = Instant::now();
    let mut schedule = leading(t0);
    schedule.writing_started();
    schedule.change(Change::Service(key("a")), t0);
    schedule.stop_leading();
    assert_eq!(schedule.next_pass(), None);
    assert_eq!(schedule.wake_at(), None);
    assert!(schedule.may_write());
}
