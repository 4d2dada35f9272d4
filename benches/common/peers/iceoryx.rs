//! The iceoryx2 peer: zero-copy publish/subscribe over shared memory,
//! configured to lose nothing (no safe overflow, `RetryUntilDelivered`, and
//! a sample that reached no subscriber sent again) and read by a
//! busy-waiting subscriber, the configuration of its published latency
//! figures.
//!
//! iceoryx2 keeps per-process state (a node, ports): the bench process
//! creates the service, and each forked partner opens it with a node and a
//! port of its own on first use. A publisher's samples reach only subscribers that existed
//! when it sent, so the publisher waits for the subscriber, and until its
//! first sample is delivered it sends again.

use super::{Case, Link, Peer};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSub;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Messages a subscriber's buffer holds (as the queue peers' rings hold
/// eight messages).
const BUFFER: usize = 8;

/// iceoryx2 0.10 pub/sub, the subscriber copying each sample out.
pub struct Iceoryx2;

/// The same, the subscriber reading each sample where it lies (touching
/// its last byte), the publisher writing straight into a loaned sample.
pub struct Iceoryx2ZeroCopy;

enum Port {
    Closed,
    Publisher {
        _node: Node<ipc::Service>,
        publisher: Publisher<ipc::Service, [u8], ()>,
    },
    Subscriber {
        _node: Node<ipc::Service>,
        subscriber: Subscriber<ipc::Service, [u8], ()>,
    },
}

struct IceLink {
    service: String,
    size: usize,
    zero_copy: bool,
    port: Port,
    /// The bench process's node and the service it created before the
    /// partners were forked (so they only open it: two first-time creators
    /// racing lost samples). The partners' copies are never used.
    _created: (Node<ipc::Service>, PubSub<ipc::Service, [u8], ()>),
}

impl IceLink {
    fn new(size: usize, zero_copy: bool) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let service = format!(
            "multiproc-bench/{}/{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _created = open_service(&service);
        Self {
            service,
            size,
            zero_copy,
            port: Port::Closed,
            _created,
        }
    }

    fn open(&self) -> (Node<ipc::Service>, PubSub<ipc::Service, [u8], ()>) {
        open_service(&self.service)
    }
}

/// A node of this process and the service `name`, created if it is not
/// there yet.
fn open_service(name: &str) -> (Node<ipc::Service>, PubSub<ipc::Service, [u8], ()>) {
    // Without a config file iceoryx2 warns on every node; the defaults are
    // what is measured.
    set_log_level(LogLevel::Error);
    let node = NodeBuilder::new()
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()
        .expect("iceoryx2 node");
    let name: ServiceName = name.try_into().expect("service name");
    let service = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(BUFFER)
        .open_or_create()
        .expect("iceoryx2 service");
    (node, service)
}

impl Link for IceLink {
    fn send(&mut self, msg: &[u8]) {
        if matches!(self.port, Port::Closed) {
            let (node, service) = self.open();
            // A subscriber first: samples reach only the subscribers there
            // are when they are sent.
            while service.dynamic_config().number_of_subscribers() == 0 {
                std::thread::yield_now();
            }
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(self.size)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("iceoryx2 publisher");
            self.port = Port::Publisher {
                _node: node,
                publisher,
            };
        }
        let Port::Publisher { publisher, .. } = &self.port else {
            unreachable!("a link's sender only sends");
        };
        loop {
            let sample = publisher
                .loan_slice_uninit(msg.len())
                .expect("iceoryx2 loan");
            let sample = sample.write_from_slice(msg);
            if sample.send().expect("iceoryx2 send") > 0 {
                return;
            }
            // It reached nobody (the subscriber's buffer was full): again,
            // as iceoryx2's own lossless examples do.
            std::hint::spin_loop();
        }
    }

    fn recv(&mut self, buf: &mut [u8]) {
        if matches!(self.port, Port::Closed) {
            let (node, service) = self.open();
            let subscriber = service
                .subscriber_builder()
                .buffer_size(BUFFER)
                .create()
                .expect("iceoryx2 subscriber");
            self.port = Port::Subscriber {
                _node: node,
                subscriber,
            };
        }
        let Port::Subscriber { subscriber, .. } = &self.port else {
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
            std::hint::spin_loop();
        }
    }
}

/// Frees what iceoryx2 nodes of dead processes left in /dev/shm and /tmp
/// (the bench's partners are killed, not shut down).
///
/// Call it from a process that never used iceoryx2 (a fresh one): in a
/// process that forked partners while it held iceoryx2 ports, some dead
/// partners' nodes still look alive.
pub fn remove_stale_iceoryx2_nodes() {
    set_log_level(LogLevel::Error);
    let _ = Node::<ipc::Service>::list(Config::global_config(), |state| {
        if let NodeState::Dead(view) = state {
            let _ = view.blocking_remove_stale_resources(Duration::from_secs(1));
        }
        CallbackProgression::Continue
    });
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
        Box::new(IceLink::new(size, false))
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
        match case {
            Case::Flow { size, procs: 1 } if size >= 64 * 1024 => None,
            _ => Some("zero-copy path shown for large payloads 1→1 only, to keep the run short"),
        }
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(IceLink::new(size, true))
    }
}
