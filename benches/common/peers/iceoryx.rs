//! The iceoryx2 peer: zero-copy publish/subscribe over shared memory,
//! configured to lose nothing (no safe overflow, `RetryUntilDelivered`, and
//! a sample that reached no subscriber sent again). Its subscriber either
//! busy-waits (the configuration of iceoryx2's published latency figures)
//! or blocks on a listener of its event service, which the publisher
//! notifies after every sample.
//!
//! iceoryx2 keeps per-process state (a node, ports): the bench process
//! creates the services before the fork, and each forked partner opens
//! them with a node and ports of its own on first use. A publisher's
//! samples reach only the subscribers there are when it sends, so the
//! publisher first waits for the subscriber.

use super::{Case, Link, Peer};
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::event::PortFactory as Event;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSub;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Messages a subscriber's buffer holds (as the queue peers' rings hold
/// eight messages).
const BUFFER: usize = 8;

/// iceoryx2 0.10 pub/sub, a busy-waiting subscriber copying each sample
/// out.
pub struct Iceoryx2;

/// The same, the subscriber reading each sample where it lies (touching
/// its last byte), the publisher writing straight into a loaned sample.
pub struct Iceoryx2ZeroCopy;

/// The same as [`Iceoryx2`], the subscriber sleeping on an event listener
/// when there is no sample.
pub struct Iceoryx2Blocking;

/// How a subscriber waits for a sample.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    Spin,
    Listen,
}

type Services = (
    Node<ipc::Service>,
    PubSub<ipc::Service, [u8], ()>,
    Event<ipc::Service>,
);

enum Port {
    Closed,
    Publisher {
        publisher: Publisher<ipc::Service, [u8], ()>,
        notifier: Notifier<ipc::Service>,
        _services: Services,
    },
    Subscriber {
        subscriber: Subscriber<ipc::Service, [u8], ()>,
        listener: Listener<ipc::Service>,
        _services: Services,
    },
}

struct IceLink {
    service: String,
    size: usize,
    zero_copy: bool,
    wait: Wait,
    port: Port,
    /// The bench process's node and the services it created before the
    /// partners were forked, so that they only open them. The partners'
    /// copies are never used.
    _created: Services,
}

impl IceLink {
    fn new(size: usize, zero_copy: bool, wait: Wait) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let service = format!(
            "multiproc-bench/{}/{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _created = open_services(&service);
        Self {
            service,
            size,
            zero_copy,
            wait,
            port: Port::Closed,
            _created,
        }
    }
}

/// iceoryx2's defaults, with a file prefix of the bench's own: what the
/// bench leaves behind is told apart from other programs' iceoryx2 files,
/// and can be removed without touching theirs.
fn bench_config() -> Config {
    // Without a config file iceoryx2 warns on every node; the defaults are
    // what is measured.
    set_log_level(LogLevel::Error);
    let mut config = Config::default();
    config.global.prefix = FileName::new(b"multiproc_bench_iox2_").expect("a valid prefix");
    config
}

/// A node of this process and the services named `name`, created if they
/// are not there yet.
fn open_services(name: &str) -> Services {
    let node = NodeBuilder::new()
        .config(&bench_config())
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .expect("iceoryx2 node");
    let name: ServiceName = name.try_into().expect("service name");
    let samples = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(BUFFER)
        .open_or_create()
        .expect("iceoryx2 publish/subscribe service");
    let events = node
        .service_builder(&name)
        .event()
        .open_or_create()
        .expect("iceoryx2 event service");
    (node, samples, events)
}

impl Link for IceLink {
    fn send(&mut self, msg: &[u8]) {
        if matches!(self.port, Port::Closed) {
            let services = open_services(&self.service);
            // A subscriber first: samples reach only the subscribers there
            // are when they are sent.
            while services.1.dynamic_config().number_of_subscribers() == 0 {
                std::thread::yield_now();
            }
            let publisher = services
                .1
                .publisher_builder()
                .initial_max_slice_len(self.size)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("iceoryx2 publisher");
            let notifier = services
                .2
                .notifier_builder()
                .create()
                .expect("iceoryx2 notifier");
            self.port = Port::Publisher {
                publisher,
                notifier,
                _services: services,
            };
        }
        let Port::Publisher {
            publisher,
            notifier,
            ..
        } = &self.port
        else {
            unreachable!("a link's sender only sends");
        };
        loop {
            let sample = publisher
                .loan_slice_uninit(msg.len())
                .expect("iceoryx2 loan");
            let sample = sample.write_from_slice(msg);
            if sample.send().expect("iceoryx2 send") > 0 {
                break;
            }
            // It reached nobody (the subscriber's buffer was full): again,
            // as iceoryx2's own lossless examples do.
            std::hint::spin_loop();
        }
        if self.wait == Wait::Listen {
            notifier.notify().expect("iceoryx2 notify");
        }
    }

    fn recv(&mut self, buf: &mut [u8]) {
        if matches!(self.port, Port::Closed) {
            let services = open_services(&self.service);
            // The listener before the subscriber: once the publisher sees
            // the subscriber, every notification finds the listener.
            let listener = services
                .2
                .listener_builder()
                .create()
                .expect("iceoryx2 listener");
            let subscriber = services
                .1
                .subscriber_builder()
                .buffer_size(BUFFER)
                .create()
                .expect("iceoryx2 subscriber");
            self.port = Port::Subscriber {
                subscriber,
                listener,
                _services: services,
            };
        }
        let Port::Subscriber {
            subscriber,
            listener,
            ..
        } = &self.port
        else {
            unreachable!("a link's receiver only receives");
        };
        loop {
            if let Some(sample) = subscriber.receive().expect("iceoryx2 receive") {
                let payload = sample.payload();
                if self.zero_copy {
                    black_box(payload[payload.len() - 1]);
                } else {
                    buf.copy_from_slice(payload);
                }
                return;
            }
            match self.wait {
                Wait::Spin => std::hint::spin_loop(),
                // Notifications are queued: one sent after the empty
                // `receive` above ends this wait at once.
                Wait::Listen => {
                    listener.blocking_wait(|_| {}).expect("iceoryx2 wait");
                }
            }
        }
    }
}

/// Frees what the bench's iceoryx2 nodes of dead processes left in
/// /dev/shm and /tmp (the bench's partners are killed, not shut down), and,
/// when no node of the bench is left alive, the bench's global management
/// segment.
///
/// Call it from a process that never used iceoryx2 (a fresh one): in a
/// process that forked partners while it held iceoryx2 ports, some dead
/// partners' nodes still look alive.
pub fn remove_stale_iceoryx2_nodes() {
    let config = bench_config();
    let mut others = 0;
    let _ = Node::<ipc::Service>::list(&config, |state| {
        match state {
            NodeState::Dead(view) => {
                if view
                    .blocking_remove_stale_resources(Duration::from_secs(1))
                    .is_err()
                {
                    others += 1;
                }
            }
            _ => others += 1,
        }
        CallbackProgression::Continue
    });
    if others == 0 {
        // SAFETY: iceoryx2 asks that no process use the domain while its
        // management segment is removed. The domain is the bench's own
        // (its file prefix), and the list above found no node of it alive
        // or being cleaned up by anyone else.
        let _ = unsafe { iceoryx2::testing::remove_global_mgmt_segment::<ipc::Service>(&config) };
    }
}

fn skip(case: Case) -> Option<&'static str> {
    match case {
        Case::Flow { procs: 2, .. } => Some(
            "publish/subscribe hands every message to every subscriber: \
             not a queue that two consumers share",
        ),
        _ => None,
    }
}

impl Peer for Iceoryx2 {
    fn key(&self) -> &'static str {
        "iceoryx2"
    }
    fn label(&self) -> &'static str {
        "iceoryx2"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        skip(case)
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(IceLink::new(size, false, Wait::Spin))
    }
}

impl Peer for Iceoryx2Blocking {
    fn key(&self) -> &'static str {
        "iceoryx2_blocking"
    }
    fn label(&self) -> &'static str {
        "iceoryx2 blocking"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        skip(case)
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(IceLink::new(size, false, Wait::Listen))
    }
}

impl Peer for Iceoryx2ZeroCopy {
    fn key(&self) -> &'static str {
        "iceoryx2_zero_copy"
    }
    fn label(&self) -> &'static str {
        "iceoryx2 zero-copy"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        super::zero_copy_skip(case)
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(IceLink::new(size, true, Wait::Spin))
    }
}
