//! Kernel events that may change devices or their health, so the agent rescans at once instead of
//! at the next `--rescan-interval` tick: rtnetlink link events (a PF's carrier or operstate
//! changing, netdevs appearing and vanishing) and uevents of the subsystems that make up a pool
//! ([`RELEVANT_SUBSYSTEMS`]: PCI functions added or removed when `sriov_numvfs` changes, drivers
//! bound and unbound, netdevs, RDMA devices, sub-functions). Uevents of any other subsystem (block
//! devices, USB, ttys, ...) are dropped by the reader, and so are the events of virtual network
//! interfaces (a pod's veth pair, bridges, VLANs: links with a kind, netdevs under
//! `/devices/virtual/`): a busy node creates them with every pod, and none is a pool device.
//!
//! The sources are behind [`EventSource`], read each on its own thread by [`KernelEvents`], which
//! turns a burst (a VF count change is hundreds of events) into one rescan once the burst has gone
//! quiet. The agent passes the real sources ([`NetlinkSource`]); tests pass fakes.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use netlink_sys::{Socket, SocketAddr, protocols};
use nix::errno::Errno;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One kernel notification channel.
pub trait EventSource: Send + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// Blocks until the kernel reports something worth a rescan. After an error the source is
    /// reopened ([`EventSource::reopen`]) or, if it cannot be, ends.
    fn wait(&mut self) -> io::Result<()>;
    /// Opens the source again after `wait` failed. `Unsupported` (the default): it cannot be,
    /// and ends.
    fn reopen(&mut self) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// A netlink multicast subscription: the real [`EventSource`].
#[derive(Debug)]
pub struct NetlinkSource {
    name: &'static str,
    socket: Socket,
    /// The netlink protocol and multicast groups, to open the subscription again.
    protocol: isize,
    groups: u32,
    /// Whether a received message is worth reporting.
    relevant: fn(&[u8]) -> bool,
}

/// `RTMGRP_LINK`: link created, deleted, or changed (flags, carrier, operstate).
const RTMGRP_LINK: u32 = 1;
/// The kernel's uevent multicast group.
const UEVENT_GROUP: u32 = 1;

/// The uevent subsystems whose events can change a pool: PCI functions and their drivers, netdevs,
/// RDMA devices and their character devices, auxiliary devices (sub-functions).
pub const RELEVANT_SUBSYSTEMS: [&str; 5] =
    ["pci", "net", "infiniband", "infiniband_verbs", "auxiliary"];

/// Whether a kernel uevent (`ACTION@DEVPATH` then NUL-separated `KEY=VALUE` fields) belongs to one
/// of the [`RELEVANT_SUBSYSTEMS`]. A message without a `SUBSYSTEM` field is dropped.
pub fn uevent_is_relevant(message: &[u8]) -> bool {
    let field = |name: &[u8]| {
        message
            .split(|&b| b == 0)
            .find_map(|field| field.strip_prefix(name))
    };
    let Some(subsystem) = field(b"SUBSYSTEM=") else {
        return false;
    };
    if !RELEVANT_SUBSYSTEMS
        .iter()
        .any(|relevant| relevant.as_bytes() == subsystem)
    {
        return false;
    }
    // A virtual netdev (veth, bridge, ...) has no device behind it that could be pooled.
    !(subsystem == b"net"
        && field(b"DEVPATH=").is_some_and(|path| path.starts_with(b"/devices/virtual/")))
}

/// Whether an rtnetlink datagram holds a link event worth a rescan: any but those of links with
/// a kind (veth, bridge, vlan, ...: software links made by `ip link add`). PF, VF, sub-function
/// and representor netdevs are made by their drivers and have none, except IPoIB: the InfiniBand
/// driver gives the netdev of every IB port (an IB PF's `ib0`, whose carrier decides its VFs'
/// health) the kind `ipoib`; and a bond's carrier decides the health of its PF ports' VFs (VF-LAG),
/// so `bond` links count too (a node has a few, made once, not one per pod). A datagram that does
/// not parse counts (better a rescan too many than a missed carrier change).
pub fn link_event_is_relevant(datagram: &[u8]) -> bool {
    use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo};

    let mut offset = 0;
    let mut any = false;
    while offset < datagram.len() {
        let Some(chunk) = datagram.get(offset..) else {
            return true;
        };
        let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk) else {
            return true;
        };
        let length = message.header.length as usize;
        if length == 0 {
            break;
        }
        any = true;
        offset += length.div_ceil(4) * 4;
        let link = match message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link),
            ) => link,
            _ => return true,
        };
        let software = link.attributes.iter().any(|attribute| {
            matches!(attribute, LinkAttribute::LinkInfo(infos)
                if infos.iter().any(|info| matches!(info, LinkInfo::Kind(kind) if !matches!(kind, InfoKind::Ipoib | InfoKind::Bond))))
        });
        if !software {
            return true;
        }
    }
    !any
}

impl NetlinkSource {
    /// rtnetlink link events of the caller's network namespace.
    pub fn link_events() -> io::Result<Self> {
        Self::open(
            "netlink link events",
            protocols::NETLINK_ROUTE,
            RTMGRP_LINK,
            link_event_is_relevant,
        )
    }

    /// Kernel uevents (`NETLINK_KOBJECT_UEVENT`) of the [`RELEVANT_SUBSYSTEMS`].
    pub fn uevents() -> io::Result<Self> {
        Self::open(
            "uevents",
            protocols::NETLINK_KOBJECT_UEVENT,
            UEVENT_GROUP,
            uevent_is_relevant,
        )
    }

    fn open(
        name: &'static str,
        protocol: isize,
        groups: u32,
        relevant: fn(&[u8]) -> bool,
    ) -> io::Result<Self> {
        let mut socket = Socket::new(protocol)?;
        socket.bind(&SocketAddr::new(0, groups))?;
        Ok(NetlinkSource {
            name,
            socket,
            protocol,
            groups,
            relevant,
        })
    }
}

impl EventSource for NetlinkSource {
    fn name(&self) -> &'static str {
        self.name
    }

    fn wait(&mut self) -> io::Result<()> {
        loop {
            match self.socket.recv_from_full() {
                Ok((message, _)) if (self.relevant)(&message) => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The receive buffer overflowed (a burst larger than it): events were lost, which
                // is itself a reason to rescan.
                Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        *self = NetlinkSource::open(self.name, self.protocol, self.groups, self.relevant)?;
        Ok(())
    }
}

/// The real sources that could be opened (link events and uevents); one that cannot is logged
/// and left out, and the periodic rescan still covers what it would have reported.
pub fn kernel_sources() -> Vec<Box<dyn EventSource>> {
    let mut sources: Vec<Box<dyn EventSource>> = Vec::new();
    for (name, open) in [
        (
            "netlink link events",
            NetlinkSource::link_events as fn() -> io::Result<NetlinkSource>,
        ),
        ("uevents", NetlinkSource::uevents),
    ] {
        match open() {
            Ok(source) => sources.push(Box::new(source)),
            Err(e) => tracing::warn!(source = %name, error = %e, "kernel events: cannot subscribe"),
        }
    }
    sources
}

/// What the reader threads share with [`KernelEvents`]: a counter and a wake-up, so the queue
/// between them is bounded whatever the event rate and however long the agent's loop is busy.
#[derive(Debug, Default)]
struct Shared {
    /// Events reported and not yet taken by [`KernelEvents::next_rescan`].
    events: AtomicUsize,
    /// Reader threads still running.
    alive: AtomicUsize,
    /// Set when [`KernelEvents`] is dropped: the readers stop after their next event.
    closed: AtomicBool,
    /// Wakes [`KernelEvents::next_rescan`] (an event, or a reader ended).
    notify: Notify,
}

/// The first pause between tries to open a failed source again; it doubles on each failure in a
/// row, up to [`REOPEN_MAX_PAUSE`], so a source that keeps failing costs next to nothing.
const REOPEN_FIRST_PAUSE: Duration = Duration::from_secs(1);
const REOPEN_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Opens `source` again, at once and then after pauses, until it works, the receiver is gone or
/// the source cannot be reopened at all; whether it was.
fn reopen(source: &mut dyn EventSource, shared: &Shared, pause: &mut Duration) -> bool {
    let name = source.name();
    let mut warned = false;
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return false;
        }
        match source.reopen() {
            Ok(()) => {
                tracing::info!(source = %name, "kernel events: source open again");
                return true;
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                tracing::warn!(source = %name, "kernel events: source closed; the periodic rescan covers what it reported");
                return false;
            }
            Err(e) if *pause >= REOPEN_MAX_PAUSE && !warned => {
                warned = true;
                tracing::warn!(source = %name, error = %e, every = ?REOPEN_MAX_PAUSE, "kernel events: the source cannot be opened again; still trying, the periodic rescan covers meanwhile");
            }
            Err(e) => {
                tracing::debug!(source = %name, error = %e, retry_in = ?*pause, "kernel events: cannot open the source again yet");
            }
        }
        std::thread::sleep(*pause);
        *pause = (*pause * 2).min(REOPEN_MAX_PAUSE);
    }
}

/// The sources, read on their own threads, as rescan requests.
#[derive(Debug)]
pub struct KernelEvents {
    shared: Arc<Shared>,
    quiet: Duration,
    max_delay: Duration,
    sources: Vec<&'static str>,
    /// Events of the burst being collected (0: no burst).
    pending: usize,
    /// When the burst's first event was seen.
    started: Instant,
    /// When its latest event was seen.
    latest: Instant,
    /// The least time between two reports ([`KernelEvents::min_gap`]).
    min_gap: Duration,
    /// When the last burst was reported.
    reported: Option<Instant>,
}

impl KernelEvents {
    /// Starts a reader thread per source. A burst of events becomes one rescan, reported once no
    /// event came for `quiet`, or `max_delay` after the burst's first event if it does not settle.
    pub fn spawn(sources: Vec<Box<dyn EventSource>>, quiet: Duration, max_delay: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let mut names = Vec::new();
        for mut source in sources {
            let name = source.name();
            let reader = Arc::clone(&shared);
            // Counted before the thread starts so a source that ends at once is not missed.
            shared.alive.fetch_add(1, Ordering::AcqRel);
            let spawned = std::thread::Builder::new()
                .name(format!("vfpool-{}", name.replace(' ', "-")))
                .spawn(move || {
                    let mut pause = REOPEN_FIRST_PAUSE;
                    // Failed since the last event: a source that fails at once after every
                    // reopen waits between reopens instead of spinning.
                    let mut failing = false;
                    loop {
                        match source.wait() {
                            Ok(()) => {
                                pause = REOPEN_FIRST_PAUSE;
                                failing = false;
                            }
                            Err(e) => {
                                if failing {
                                    tracing::debug!(source = %name, error = %e, "kernel events: receive failed again");
                                    std::thread::sleep(pause);
                                    pause = (pause * 2).min(REOPEN_MAX_PAUSE);
                                } else {
                                    tracing::warn!(source = %name, error = %e, "kernel events: receive failed; opening the source again");
                                }
                                failing = true;
                                if !reopen(source.as_mut(), &reader, &mut pause) {
                                    break;
                                }
                                // Events may have been lost meanwhile: worth a rescan.
                            }
                        }
                        // The receiver is gone: the agent is stopping.
                        if reader.closed.load(Ordering::Acquire) {
                            break;
                        }
                        reader.events.fetch_add(1, Ordering::AcqRel);
                        reader.notify.notify_one();
                    }
                    reader.alive.fetch_sub(1, Ordering::AcqRel);
                    reader.notify.notify_one();
                });
            match spawned {
                Ok(_) => names.push(name),
                Err(e) => {
                    shared.alive.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(source = %name, error = %e, "kernel events: cannot start the reader thread");
                }
            }
        }
        let now = Instant::now();
        KernelEvents {
            shared,
            quiet,
            max_delay,
            sources: names,
            pending: 0,
            started: now,
            latest: now,
            min_gap: Duration::ZERO,
            reported: None,
        }
    }

    /// Reports a burst no sooner than `gap` after the previous report. Isolated events just over
    /// the quiet time apart (a pod start moving a VF's netdev out of the host, a flapping carrier)
    /// would otherwise each cost a full rescan, several a second; the events of the gap are not
    /// lost, they join the next burst.
    pub fn min_gap(mut self, gap: Duration) -> Self {
        self.min_gap = gap;
        self
    }

    /// When the burst being collected is due to be reported.
    fn due(&self) -> Instant {
        let settled = (self.latest + self.quiet).min(self.started + self.max_delay);
        match self.reported {
            Some(reported) => settled.max(reported + self.min_gap),
            None => settled,
        }
    }

    /// Reports the burst being collected.
    fn report(&mut self) -> Option<usize> {
        self.reported = Some(Instant::now());
        Some(std::mem::take(&mut self.pending))
    }

    /// The sources being read.
    pub fn sources(&self) -> &[&'static str] {
        &self.sources
    }

    /// Takes the events reported since the last look into the current burst.
    fn collect(&mut self) {
        let new = self.shared.events.swap(0, Ordering::AcqRel);
        if new == 0 {
            return;
        }
        let now = Instant::now();
        if self.pending == 0 {
            self.started = now;
        }
        self.pending += new;
        self.latest = now;
    }

    /// Waits for an event, then for its burst to go quiet (no event for the quiet time, at most
    /// the maximum delay after its first event), and returns how many events it held: one rescan
    /// for all of them. `None` once every source has ended and nothing is pending.
    ///
    /// Cancel-safe (the agent's loop `select!`s on it next to signals and timers): a burst that
    /// started is remembered and reported by the next call.
    pub async fn next_rescan(&mut self) -> Option<usize> {
        loop {
            self.collect();
            if self.pending == 0 {
                if self.shared.alive.load(Ordering::Acquire) == 0 {
                    // A reader may have counted an event just before it ended.
                    self.collect();
                    if self.pending == 0 {
                        return None;
                    }
                    continue;
                }
                // `notify_one` leaves a permit when nobody waits, so an event between `collect`
                // and here is not missed.
                self.shared.notify.notified().await;
                continue;
            }
            let due = self.due();
            if Instant::now() >= due {
                return self.report();
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    self.collect();
                    if Instant::now() >= self.due() {
                        return self.report();
                    }
                }
                () = self.shared.notify.notified() => {}
            }
        }
    }
}

impl Drop for KernelEvents {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A source fed by the test; it records every event it delivered and, when it can be
    /// reopened, every reopening.
    struct Fake {
        name: &'static str,
        feed: std::sync::mpsc::Receiver<io::Result<()>>,
        delivered: Arc<Mutex<usize>>,
        reopened: Option<Arc<Mutex<usize>>>,
    }

    impl EventSource for Fake {
        fn name(&self) -> &'static str {
            self.name
        }

        fn wait(&mut self) -> io::Result<()> {
            let next = self
                .feed
                .recv()
                .unwrap_or_else(|_| Err(io::Error::other("feed closed")));
            if next.is_ok() {
                *self.delivered.lock().unwrap() += 1;
            }
            next
        }

        fn reopen(&mut self) -> io::Result<()> {
            match &self.reopened {
                Some(count) => {
                    *count.lock().unwrap() += 1;
                    Ok(())
                }
                None => Err(io::ErrorKind::Unsupported.into()),
            }
        }
    }

    /// A fake source, the sender feeding it, and its count of delivered events.
    type Fed = (
        Box<dyn EventSource>,
        std::sync::mpsc::Sender<io::Result<()>>,
        Arc<Mutex<usize>>,
    );

    fn fake(name: &'static str) -> Fed {
        let (tx, feed) = std::sync::mpsc::channel();
        let delivered = Arc::new(Mutex::new(0));
        let source = Fake {
            name,
            feed,
            delivered: Arc::clone(&delivered),
            reopened: None,
        };
        (Box::new(source), tx, delivered)
    }

    /// A source that fails once and is opened again (after the first pause) goes on reporting,
    /// and its failure is itself worth a rescan (events may have been lost). A failed source
    /// used to end for good, leaving only the periodic rescan.
    #[tokio::test]
    async fn a_failed_source_is_opened_again() {
        let (tx, feed) = std::sync::mpsc::channel();
        let reopened = Arc::new(Mutex::new(0));
        let source = Fake {
            name: "links",
            feed,
            delivered: Arc::new(Mutex::new(0)),
            reopened: Some(Arc::clone(&reopened)),
        };
        let mut events = KernelEvents::spawn(
            vec![Box::new(source)],
            Duration::from_millis(10),
            Duration::from_secs(2),
        );
        tx.send(Err(io::Error::other("socket error"))).unwrap();
        let after_failure = tokio::time::timeout(Duration::from_secs(30), events.next_rescan());
        assert_eq!(after_failure.await.unwrap(), Some(1));
        assert_eq!(*reopened.lock().unwrap(), 1);
        tx.send(Ok(())).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(30), events.next_rescan());
        assert_eq!(next.await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_burst_is_one_rescan_and_a_later_event_another() {
        let (source, feed, delivered) = fake("fake");
        let mut events = KernelEvents::spawn(
            vec![source],
            Duration::from_millis(300),
            Duration::from_secs(2),
        );
        assert_eq!(events.sources(), ["fake"]);
        for _ in 0..100 {
            feed.send(Ok(())).unwrap();
        }
        assert_eq!(events.next_rescan().await, Some(100));
        assert_eq!(*delivered.lock().unwrap(), 100);
        // Nothing more is pending: no second rescan for the same burst.
        let quiet = tokio::time::timeout(Duration::from_millis(100), events.next_rescan()).await;
        assert!(quiet.is_err(), "a burst must give exactly one rescan");
        feed.send(Ok(())).unwrap();
        assert_eq!(events.next_rescan().await, Some(1));
    }

    #[tokio::test]
    async fn a_burst_interrupted_by_another_branch_is_still_reported() {
        let (source, feed, _) = fake("fake");
        let mut events = KernelEvents::spawn(
            vec![source],
            Duration::from_millis(300),
            Duration::from_secs(2),
        );
        feed.send(Ok(())).unwrap();
        // The agent's loop picks another branch while the burst settles: the future is dropped.
        let cut = tokio::time::timeout(Duration::from_millis(100), events.next_rescan()).await;
        assert!(cut.is_err());
        feed.send(Ok(())).unwrap();
        let next = tokio::time::timeout(Duration::from_secs(30), events.next_rescan()).await;
        assert_eq!(next.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn a_failed_source_leaves_the_others_and_all_failed_ends() {
        let (links, link_feed, _) = fake("links");
        let (uevents, uevent_feed, _) = fake("uevents");
        let mut events = KernelEvents::spawn(
            vec![links, uevents],
            Duration::from_millis(10),
            Duration::from_secs(2),
        );
        link_feed
            .send(Err(io::Error::other("socket closed")))
            .unwrap();
        uevent_feed.send(Ok(())).unwrap();
        assert_eq!(events.next_rescan().await, Some(1));
        drop(uevent_feed);
        let end = tokio::time::timeout(Duration::from_secs(30), events.next_rescan()).await;
        assert_eq!(end.unwrap(), None);
    }

    /// Isolated events just over the quiet time apart are reported at most once per minimum gap
    /// (they each used to be a rescan); none is lost.
    #[tokio::test]
    async fn isolated_events_are_reported_at_most_once_per_minimum_gap() {
        let (source, feed, _) = fake("fake");
        let mut events = KernelEvents::spawn(
            vec![source],
            Duration::from_millis(50),
            Duration::from_secs(2),
        )
        .min_gap(Duration::from_secs(1));
        let started = std::time::Instant::now();
        let feeder = std::thread::spawn(move || {
            for _ in 0..20 {
                feed.send(Ok(())).unwrap();
                std::thread::sleep(Duration::from_millis(150));
            }
            feed
        });
        let (mut reports, mut seen) = (0, 0);
        while seen < 20 {
            seen += events.next_rescan().await.unwrap();
            reports += 1;
        }
        let elapsed = started.elapsed();
        // One report may come at once, then at most one per second (a slow machine stretches
        // the feeding and so allows more, never fewer, seconds).
        let allowed = elapsed.as_secs() + 2;
        assert!(
            reports <= allowed,
            "{reports} reports for 20 events in {elapsed:?} (at most {allowed})"
        );
        let _feed = feeder.join().unwrap();
    }

    /// A burst keeps collecting while events keep coming within the quiet time, even well past
    /// the quiet time after its first event.
    #[tokio::test]
    async fn a_burst_lasts_until_it_goes_quiet() {
        let (source, feed, _) = fake("fake");
        let mut events = KernelEvents::spawn(
            vec![source],
            Duration::from_millis(400),
            Duration::from_secs(30),
        );
        let started = std::time::Instant::now();
        let feeder = std::thread::spawn(move || {
            for _ in 0..8 {
                feed.send(Ok(())).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            feed
        });
        assert_eq!(events.next_rescan().await, Some(8));
        // The last event came about 700 ms after the first; the burst ended 400 ms later.
        assert!(
            started.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            started.elapsed()
        );
        let _feed = feeder.join().unwrap();
    }

    /// A burst that never goes quiet is still reported at the maximum delay after its first event.
    #[tokio::test]
    async fn an_endless_burst_is_reported_at_the_maximum_delay() {
        let (source, feed, _) = fake("fake");
        let mut events = KernelEvents::spawn(
            vec![source],
            Duration::from_millis(400),
            Duration::from_millis(800),
        );
        // 100 events 20 ms apart: never quiet for 400 ms, about 2 s in all.
        let feeder = std::thread::spawn(move || {
            for _ in 0..100 {
                feed.send(Ok(())).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            feed
        });
        let started = std::time::Instant::now();
        let first = tokio::time::timeout(Duration::from_secs(5), events.next_rescan())
            .await
            .expect("an endless burst must still be reported")
            .unwrap();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        assert!((1..100).contains(&first), "{first}");
        // The events after the cut are the next bursts; none is lost.
        let mut total = first;
        while total < 100 {
            let next = tokio::time::timeout(Duration::from_secs(5), events.next_rescan()).await;
            total += next.unwrap().unwrap();
        }
        assert_eq!(total, 100);
        let _feed = feeder.join().unwrap();
    }

    /// The events of a loop that does not look for a long while are one count, not a queue.
    #[tokio::test]
    async fn events_while_nobody_looks_are_counted_not_queued() {
        let (source, feed, delivered) = fake("fake");
        let mut events = KernelEvents::spawn(
            vec![source],
            Duration::from_millis(10),
            Duration::from_secs(2),
        );
        for _ in 0..10_000 {
            feed.send(Ok(())).unwrap();
        }
        while *delivered.lock().unwrap() < 10_000 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(events.shared.events.load(Ordering::Acquire), 10_000);
        assert_eq!(events.next_rescan().await, Some(10_000));
    }

    /// One rtnetlink datagram holding `links` (name, kind) as RTM_NEWLINK messages.
    fn link_datagram(links: &[(&str, Option<netlink_packet_route::link::InfoKind>)]) -> Vec<u8> {
        use netlink_packet_core::NetlinkMessage;
        use netlink_packet_route::RouteNetlinkMessage;
        use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
        let mut datagram = Vec::new();
        for (name, kind) in links {
            let mut link = LinkMessage::default();
            link.attributes
                .push(LinkAttribute::IfName((*name).to_string()));
            if let Some(kind) = kind {
                link.attributes
                    .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind.clone())]));
            }
            let mut message = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
            message.finalize();
            let mut buffer = vec![0u8; message.buffer_len()];
            message.serialize(&mut buffer);
            buffer.resize(buffer.len().div_ceil(4) * 4, 0);
            datagram.extend(buffer);
        }
        datagram
    }

    #[test]
    fn link_events_of_software_links_are_not_relevant() {
        use netlink_packet_route::link::InfoKind;
        // A VF's or PF's netdev (no kind): a rescan.
        assert!(link_event_is_relevant(&link_datagram(&[(
            "ens1f0v3", None
        )])));
        // A pod's veth pair, a bridge, a VLAN: not.
        assert!(!link_event_is_relevant(&link_datagram(&[
            ("veth1234", Some(InfoKind::Veth)),
            ("cni0", Some(InfoKind::Bridge)),
        ])));
        // An InfiniBand port's netdev has a kind, and is hardware: a rescan.
        assert!(link_event_is_relevant(&link_datagram(&[(
            "ib0",
            Some(InfoKind::Ipoib)
        )])));
        // A bond: its carrier is its PF ports' VFs' health (VF-LAG), a rescan.
        assert!(link_event_is_relevant(&link_datagram(&[(
            "bond0",
            Some(InfoKind::Bond)
        )])));
        // A burst mixing both: a rescan.
        assert!(link_event_is_relevant(&link_datagram(&[
            ("veth1234", Some(InfoKind::Veth)),
            ("ens1f0", None),
        ])));
        // What does not parse counts.
        assert!(link_event_is_relevant(b"\x05\x00\x00"));
        assert!(link_event_is_relevant(&[0xff; 40]));
    }

    #[test]
    fn uevents_of_virtual_netdevs_are_not_relevant() {
        let uevent = |path: &str| {
            [
                format!("add@{path}"),
                "ACTION=add".to_string(),
                format!("DEVPATH={path}"),
                "SUBSYSTEM=net".to_string(),
            ]
            .join("\0")
            .into_bytes()
        };
        assert!(!uevent_is_relevant(&uevent(
            "/devices/virtual/net/veth1234"
        )));
        assert!(uevent_is_relevant(&uevent(
            "/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/net/ens1f0v0"
        )));
    }

    #[test]
    fn only_uevents_of_pool_subsystems_are_relevant() {
        let uevent = |fields: &[&str]| fields.join("\0").into_bytes();
        for subsystem in RELEVANT_SUBSYSTEMS {
            let message = uevent(&[
                "add@/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2",
                "ACTION=add",
                "DEVPATH=/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2",
                &format!("SUBSYSTEM={subsystem}"),
                "SEQNUM=4242",
            ]);
            assert!(uevent_is_relevant(&message), "{subsystem}");
        }
        for subsystem in [
            "block",
            "usb",
            "tty",
            "pci_bus",
            "netx",
            "",
            "infiniband_mad",
        ] {
            let message = uevent(&[
                "change@/devices/virtual/block/loop0",
                "ACTION=change",
                &format!("SUBSYSTEM={subsystem}"),
            ]);
            assert!(!uevent_is_relevant(&message), "{subsystem:?}");
        }
        // No SUBSYSTEM field, a value in another field, garbage.
        assert!(!uevent_is_relevant(b"add@/devices/x\0ACTION=add"));
        assert!(!uevent_is_relevant(
            b"add@/devices/x\0DEVPATH=SUBSYSTEM=pci"
        ));
        assert!(!uevent_is_relevant(b""));
        assert!(!uevent_is_relevant(b"\xff\xfe\0\0SUBSYSTEM"));
        // The first SUBSYSTEM field counts; a trailing NUL is fine.
        assert!(uevent_is_relevant(b"bind@/devices/x\0SUBSYSTEM=pci\0"));
    }

    /// The real sources in a network namespace of their own (needs root). A veth pair added there
    /// (what every pod start does on a node) is a uevent on the socket but no reason to rescan; a
    /// kind-less link changing (as a PF's carrier does; here the namespace's loopback going up)
    /// is.
    #[tokio::test]
    async fn netlink_sources_report_device_links_not_veths() {
        let (commands, inbox) = std::sync::mpsc::channel::<&'static [&'static str]>();
        let (opened_tx, opened) = std::sync::mpsc::channel();
        // A thread of its own in a new network namespace runs `ip` there on request.
        let netns = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): the test needs root");
            // The sockets belong to this thread's new namespace (and keep it alive).
            let links = NetlinkSource::link_events().unwrap();
            // Every uevent, to show the subscription works; the filter is tested on its own.
            let raw_uevents = NetlinkSource::open(
                "uevents (unfiltered)",
                protocols::NETLINK_KOBJECT_UEVENT,
                UEVENT_GROUP,
                |_| true,
            )
            .unwrap();
            opened_tx.send((links, raw_uevents)).unwrap();
            for args in inbox {
                // A child forked from this thread is in this thread's network namespace.
                let status = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .expect("iproute2 (`ip`) is needed");
                assert!(status.success(), "ip {args:?}");
            }
        });
        let (links, raw_uevents) = opened.recv().unwrap();
        let mut links = KernelEvents::spawn(
            vec![Box::new(links)],
            Duration::from_millis(10),
            Duration::from_secs(2),
        );
        let mut uevents = KernelEvents::spawn(
            vec![Box::new(raw_uevents)],
            Duration::from_millis(10),
            Duration::from_secs(2),
        );
        commands
            .send(&[
                "link", "add", "vfpdp0", "type", "veth", "peer", "name", "vfpdp1",
            ])
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), uevents.next_rescan()).await;
        assert!(
            matches!(got, Ok(Some(n)) if n >= 1),
            "uevents: nothing for the new veth"
        );
        let early = tokio::time::timeout(Duration::from_millis(500), links.next_rescan()).await;
        assert!(early.is_err(), "a veth pair made the agent rescan");
        commands.send(&["link", "set", "lo", "up"]).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), links.next_rescan()).await;
        assert!(
            matches!(got, Ok(Some(n)) if n >= 1),
            "link events: nothing for the loopback going up"
        );
        drop(commands);
        netns.join().unwrap();
    }
}
