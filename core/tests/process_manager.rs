//! Process managers: pure decisions, derived command ids, re-delivery,
//! rejected commands, transient dispatch failures and durable deadlines.
//!
//! The process under test ships orders: an `OrderPlaced` reserves stock for
//! every item; once all are `Reserved` it charges the order and waits, at most
//! 30 minutes, for `Charged`; then it ships. A refused reservation or a charge
//! that times out releases what was reserved (last first) and cancels the order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use annals::memory::MemoryStore;
use annals::process::{
    DispatchError, Dispatcher, Due, Effects, Input, ProcessManager, ProcessOptions, ProcessRunner,
    Trigger, derive_id,
};
use annals::projection::{
    Backoff, FailurePolicy, ProjectionRunner, ProjectionStore, RunnerOptions,
};
use annals::testing::given;
use annals::{
    Aggregate, CommandContext, DomainEvent, EventFilter, EventStore, ExecuteError, Handle,
    Metadata, Position, RecordedEvent, Repository,
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The receivers: orders, stock, payments

// The variant names are the event type names other streams see.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
enum OrderEvent {
    OrderPlaced { order_id: Uuid, skus: Vec<String> },
    OrderCancelled { order_id: Uuid, reason: String },
    OrderShipped { order_id: Uuid },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum OrderError {
    #[error("no such order")]
    NotFound,
    #[error("the order is cancelled")]
    Cancelled,
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "order")]
struct Order {
    placed: bool,
    cancelled: bool,
    shipped: bool,
}

impl Aggregate for Order {
    type Event = OrderEvent;
    type Error = OrderError;
    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced { .. } => self.placed = true,
            OrderEvent::OrderCancelled { .. } => self.cancelled = true,
            OrderEvent::OrderShipped { .. } => self.shipped = true,
        }
    }
}

struct PlaceOrder(Uuid, Vec<String>);
struct CancelOrder(Uuid, String);
struct ShipOrder(Uuid);

impl Handle<PlaceOrder> for Order {
    fn handle(&self, cmd: &PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
        Ok(vec![OrderEvent::OrderPlaced {
            order_id: cmd.0,
            skus: cmd.1.clone(),
        }])
    }
}

impl Handle<CancelOrder> for Order {
    fn handle(&self, cmd: &CancelOrder) -> Result<Vec<OrderEvent>, OrderError> {
        match (self.placed, self.cancelled) {
            (false, _) => Err(OrderError::NotFound),
            (true, true) => Ok(vec![]),
            (true, false) => Ok(vec![OrderEvent::OrderCancelled {
                order_id: cmd.0,
                reason: cmd.1.clone(),
            }]),
        }
    }
}

impl Handle<ShipOrder> for Order {
    fn handle(&self, cmd: &ShipOrder) -> Result<Vec<OrderEvent>, OrderError> {
        match (self.placed, self.cancelled, self.shipped) {
            (false, ..) => Err(OrderError::NotFound),
            (_, true, _) => Err(OrderError::Cancelled),
            (_, _, true) => Ok(vec![]),
            _ => Ok(vec![OrderEvent::OrderShipped { order_id: cmd.0 }]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
enum StockEvent {
    Reserved { order_id: Uuid, sku: String },
    Released { order_id: Uuid, sku: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is sold out")]
struct SoldOut(String);

/// One item's stock (stream `stock-<sku>`); items named `sold-out-*` have none.
#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "stock")]
struct Stock {
    held: Vec<Uuid>,
}

impl Aggregate for Stock {
    type Event = StockEvent;
    type Error = SoldOut;
    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Reserved { order_id, .. } => self.held.push(*order_id),
            StockEvent::Released { order_id, .. } => self.held.retain(|o| o != order_id),
        }
    }
}

struct ReserveStock(Uuid, String);
struct ReleaseStock(Uuid, String);

impl Handle<ReserveStock> for Stock {
    fn handle(&self, cmd: &ReserveStock) -> Result<Vec<StockEvent>, SoldOut> {
        if cmd.1.starts_with("sold-out") {
            return Err(SoldOut(cmd.1.clone()));
        }
        if self.held.contains(&cmd.0) {
            return Ok(vec![]);
        }
        Ok(vec![StockEvent::Reserved {
            order_id: cmd.0,
            sku: cmd.1.clone(),
        }])
    }
}

impl Handle<ReleaseStock> for Stock {
    fn handle(&self, cmd: &ReleaseStock) -> Result<Vec<StockEvent>, SoldOut> {
        if !self.held.contains(&cmd.0) {
            return Ok(vec![]);
        }
        Ok(vec![StockEvent::Released {
            order_id: cmd.0,
            sku: cmd.1.clone(),
        }])
    }
}

#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
enum PaymentEvent {
    Charged { order_id: Uuid },
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "payment")]
struct Payment {
    charged: bool,
}

impl Aggregate for Payment {
    type Event = PaymentEvent;
    type Error = std::convert::Infallible;
    fn apply(&mut self, _: &PaymentEvent) {
        self.charged = true;
    }
}

struct ChargeOrder(Uuid);

impl Handle<ChargeOrder> for Payment {
    fn handle(&self, cmd: &ChargeOrder) -> Result<Vec<PaymentEvent>, std::convert::Infallible> {
        if self.charged {
            return Ok(vec![]);
        }
        Ok(vec![PaymentEvent::Charged { order_id: cmd.0 }])
    }
}

// ---------------------------------------------------------------------------
// The process manager

const CHARGE_TIMEOUT: &str = "charge-timeout";

#[derive(Debug, Clone, PartialEq, Eq)]
enum ShippingCommand {
    Reserve { order_id: Uuid, sku: String },
    Release { order_id: Uuid, sku: String },
    Charge { order_id: Uuid },
    Ship { order_id: Uuid },
    Cancel { order_id: Uuid, reason: String },
}

#[derive(Debug, Clone, PartialEq, annals::DomainEvent)]
enum ShippingEvent {
    Started {
        order_id: Uuid,
        skus: Vec<String>,
    },
    ItemReserved {
        sku: String,
    },
    ChargeRequested {
        order_id: Uuid,
        due: DateTime<Utc>,
    },
    Paid {
        order_id: Uuid,
    },
    Compensated {
        order_id: Uuid,
        release: Vec<String>,
        reason: String,
    },
    LateReleased {
        order_id: Uuid,
        sku: String,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    #[default]
    New,
    Reserving,
    Charging,
    Shipped,
    Compensating,
}

#[derive(Debug, Default, annals::AggregateType)]
#[aggregate(name = "shipping")]
struct Shipping {
    stage: Stage,
    order_id: Uuid,
    skus: Vec<String>,
    reserved: Vec<String>,
}

impl Aggregate for Shipping {
    type Event = ShippingEvent;
    type Error = std::convert::Infallible;
    fn apply(&mut self, event: &ShippingEvent) {
        match event {
            ShippingEvent::Started { order_id, skus } => {
                self.stage = Stage::Reserving;
                self.order_id = *order_id;
                self.skus = skus.clone();
            }
            ShippingEvent::ItemReserved { sku } => self.reserved.push(sku.clone()),
            ShippingEvent::ChargeRequested { .. } => self.stage = Stage::Charging,
            ShippingEvent::Paid { .. } => self.stage = Stage::Shipped,
            ShippingEvent::Compensated { .. } => {
                self.stage = Stage::Compensating;
                self.reserved.clear();
            }
            ShippingEvent::LateReleased { .. } => {}
        }
    }
}

impl Shipping {
    fn compensate(&self, reason: String) -> ShippingEvent {
        ShippingEvent::Compensated {
            order_id: self.order_id,
            release: self.reserved.iter().rev().cloned().collect(),
            reason,
        }
    }
}

impl ProcessManager for Shipping {
    type Command = ShippingCommand;

    fn filter() -> EventFilter {
        EventFilter::types(["OrderPlaced", "Reserved", "Charged"])
    }

    fn correlate(event: &RecordedEvent) -> Option<Uuid> {
        field(event, "order_id")?.parse().ok()
    }

    fn react(&self, input: &Input<ShippingCommand>) -> Vec<ShippingEvent> {
        match (input, self.stage) {
            (Input::Event(e), Stage::New) if e.event_type == "OrderPlaced" => {
                match e.decode::<OrderEvent>() {
                    Ok(OrderEvent::OrderPlaced { order_id, skus }) => {
                        vec![ShippingEvent::Started { order_id, skus }]
                    }
                    _ => vec![],
                }
            }
            (Input::Event(e), Stage::Reserving) if e.event_type == "Reserved" => {
                let sku = field(e, "sku").unwrap_or_default();
                if !self.skus.contains(&sku) || self.reserved.contains(&sku) {
                    return vec![];
                }
                let mut out = vec![ShippingEvent::ItemReserved { sku }];
                if self.reserved.len() + 1 == self.skus.len() {
                    out.push(ShippingEvent::ChargeRequested {
                        order_id: self.order_id,
                        due: e.recorded_at + chrono::Duration::minutes(30),
                    });
                }
                out
            }
            (Input::Event(e), Stage::Compensating) if e.event_type == "Reserved" => {
                vec![ShippingEvent::LateReleased {
                    order_id: self.order_id,
                    sku: field(e, "sku").unwrap_or_default(),
                }]
            }
            (Input::Event(e), Stage::Charging) if e.event_type == "Charged" => {
                vec![ShippingEvent::Paid {
                    order_id: self.order_id,
                }]
            }
            (Input::Deadline { name, .. }, Stage::Charging) if name == CHARGE_TIMEOUT => {
                vec![self.compensate("charge timed out".into())]
            }
            (
                Input::Rejected {
                    command: ShippingCommand::Reserve { sku, .. },
                    reason,
                },
                Stage::Reserving,
            ) => vec![self.compensate(format!("cannot reserve {sku}: {reason}"))],
            _ => vec![],
        }
    }

    fn effects(event: &ShippingEvent) -> Effects<ShippingCommand> {
        match event {
            ShippingEvent::Started { order_id, skus } => Effects {
                commands: skus
                    .iter()
                    .map(|sku| ShippingCommand::Reserve {
                        order_id: *order_id,
                        sku: sku.clone(),
                    })
                    .collect(),
                deadlines: vec![],
                cancels: vec![],
            },
            ShippingEvent::ChargeRequested { order_id, due } => {
                Effects::command(ShippingCommand::Charge {
                    order_id: *order_id,
                })
                .with_deadline(CHARGE_TIMEOUT, *due)
            }
            ShippingEvent::Paid { order_id } => Effects::command(ShippingCommand::Ship {
                order_id: *order_id,
            })
            .cancelling(CHARGE_TIMEOUT),
            ShippingEvent::Compensated {
                order_id,
                release,
                reason,
            } => {
                let mut commands: Vec<_> = release
                    .iter()
                    .map(|sku| ShippingCommand::Release {
                        order_id: *order_id,
                        sku: sku.clone(),
                    })
                    .collect();
                commands.push(ShippingCommand::Cancel {
                    order_id: *order_id,
                    reason: reason.clone(),
                });
                // A timeout that compensates cancels its own kind of
                // deadline (as the airline's saga does): the one firing must
                // survive that until its commands went out.
                Effects {
                    commands,
                    deadlines: vec![],
                    cancels: vec![CHARGE_TIMEOUT.into()],
                }
            }
            ShippingEvent::LateReleased { order_id, sku } => {
                Effects::command(ShippingCommand::Release {
                    order_id: *order_id,
                    sku: sku.clone(),
                })
            }
            ShippingEvent::ItemReserved { .. } => Effects::none(),
        }
    }
}

// ---------------------------------------------------------------------------
// A recording dispatcher over real repositories

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Rejected,
    Transient,
}

#[derive(Debug, Clone)]
struct Sent {
    command: ShippingCommand,
    context: CommandContext,
    outcome: Outcome,
}

/// Sends commands to repositories on the same store (so the store records
/// their command ids) and records every attempt.
struct Receivers {
    store: MemoryStore,
    sent: Mutex<Vec<Sent>>,
    /// Per command kind (`"Charge"`, `"Cancel"`, ...), how many of the next
    /// ones fail as unreachable.
    failing: Mutex<HashMap<&'static str, u32>>,
}

impl Receivers {
    fn new(store: &MemoryStore) -> Arc<Self> {
        Arc::new(Self {
            store: store.clone(),
            sent: Mutex::default(),
            failing: Mutex::default(),
        })
    }

    /// The next `times` commands of this kind fail as unreachable.
    fn fail(&self, kind: &'static str, times: u32) {
        self.failing.lock().unwrap().insert(kind, times);
    }

    fn should_fail(&self, command: &ShippingCommand) -> bool {
        let kind = match command {
            ShippingCommand::Reserve { .. } => "Reserve",
            ShippingCommand::Release { .. } => "Release",
            ShippingCommand::Charge { .. } => "Charge",
            ShippingCommand::Ship { .. } => "Ship",
            ShippingCommand::Cancel { .. } => "Cancel",
        };
        let mut failing = self.failing.lock().unwrap();
        match failing.get_mut(kind) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// The commands that reached a receiver (done or rejected), in order.
    fn delivered(&self) -> Vec<ShippingCommand> {
        self.sent()
            .into_iter()
            .filter(|s| s.outcome != Outcome::Transient)
            .map(|s| s.command)
            .collect()
    }

    /// Asserts that no command id reached a receiver twice.
    #[track_caller]
    fn assert_each_delivered_once(&self) {
        let mut seen: HashMap<Uuid, ShippingCommand> = HashMap::new();
        for s in self.sent() {
            if s.outcome == Outcome::Transient {
                continue;
            }
            let id = s.context.command_id.expect("every command carries an id");
            if let Some(first) = seen.insert(id, s.command.clone()) {
                panic!(
                    "command {id} delivered twice: {first:?} then {:?}\nall: {:#?}",
                    s.command,
                    self.sent()
                );
            }
        }
    }
}

fn rejected<E: std::error::Error + Send + Sync + 'static>(error: ExecuteError<E>) -> DispatchError {
    match error {
        ExecuteError::Rejected(e) => DispatchError::Rejected(Box::new(e)),
        other => DispatchError::Transient(Box::new(other)),
    }
}

#[async_trait::async_trait]
impl Dispatcher<ShippingCommand> for Receivers {
    async fn dispatch(
        &self,
        command: ShippingCommand,
        context: CommandContext,
    ) -> Result<(), DispatchError> {
        let store = self.store.clone();
        let ctx = context.clone();
        let result = match &command {
            command if self.should_fail(command) => {
                Err(DispatchError::Transient("receiver unreachable".into()))
            }
            ShippingCommand::Reserve { order_id, sku } => Repository::<Stock, _>::new(store)
                .execute_with(sku, ReserveStock(*order_id, sku.clone()), ctx)
                .await
                .map(drop)
                .map_err(rejected),
            ShippingCommand::Release { order_id, sku } => Repository::<Stock, _>::new(store)
                .execute_with(sku, ReleaseStock(*order_id, sku.clone()), ctx)
                .await
                .map(drop)
                .map_err(rejected),
            ShippingCommand::Charge { order_id } => Repository::<Payment, _>::new(store)
                .execute_with(order_id, ChargeOrder(*order_id), ctx)
                .await
                .map(drop)
                .map_err(rejected),
            ShippingCommand::Ship { order_id } => Repository::<Order, _>::new(store)
                .execute_with(order_id, ShipOrder(*order_id), ctx)
                .await
                .map(drop)
                .map_err(rejected),
            ShippingCommand::Cancel { order_id, reason } => Repository::<Order, _>::new(store)
                .execute_with(order_id, CancelOrder(*order_id, reason.clone()), ctx)
                .await
                .map(drop)
                .map_err(rejected),
        };
        let outcome = match &result {
            Ok(()) => Outcome::Done,
            Err(DispatchError::Rejected(_)) => Outcome::Rejected,
            Err(DispatchError::Transient(_)) => Outcome::Transient,
        };
        self.sent.lock().unwrap().push(Sent {
            command,
            context,
            outcome,
        });
        result
    }
}

// ---------------------------------------------------------------------------
// Helpers

type Shipper = ProcessRunner<Shipping, MemoryStore, Receivers>;

async fn place(store: &MemoryStore, skus: &[&str]) -> (Uuid, RecordedEvent) {
    let order_id = Uuid::now_v7();
    Repository::<Order, _>::new(store.clone())
        .execute(
            order_id,
            PlaceOrder(order_id, skus.iter().map(|s| s.to_string()).collect()),
        )
        .await
        .unwrap();
    let placed = store
        .read_stream(&format!("order-{order_id}"), 1, 1)
        .await
        .unwrap()
        .remove(0);
    (order_id, placed)
}

/// The last event of a stream.
async fn last_of(store: &MemoryStore, stream: &str) -> RecordedEvent {
    store
        .read_stream(stream, 1, usize::MAX)
        .await
        .unwrap()
        .pop()
        .unwrap_or_else(|| panic!("{stream} is empty"))
}

async fn types_of(store: &MemoryStore, stream: &str) -> Vec<String> {
    store
        .read_stream(stream, 1, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

/// A string field of an event's payload.
fn field(event: &RecordedEvent, name: &str) -> Option<String> {
    let payload = event.payload.to_value().ok()?;
    payload.get(name)?.as_str().map(str::to_owned)
}

fn options() -> RunnerOptions {
    RunnerOptions {
        batch_size: 100,
        batch_delay: Duration::from_millis(2),
        min_batch_interval: Duration::ZERO,
        backoff: Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        failure_policy: FailurePolicy::Stop { max_attempts: 1 },
        idle_interval: Duration::from_millis(20),
    }
}

fn runner(store: &MemoryStore, process: &Arc<Shipper>) -> ProjectionRunner<MemoryStore, Shipper> {
    ProjectionRunner::new(store.clone(), Arc::clone(process)).with_options(options())
}

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap() + chrono::Duration::minutes(minutes)
}

/// An event as the log would hand it over.
fn recorded(
    stream: &str,
    version: u64,
    event: &impl DomainEvent,
    at: DateTime<Utc>,
) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::now_v7(),
        stream_id: stream.into(),
        stream_version: version,
        position: Position::new(version, version),
        event_type: event.event_type().into(),
        schema_version: event.schema_version(),
        payload: event.encode().unwrap(),
        metadata: Metadata::default(),
        tags: Vec::new(),
        recorded_at: at,
    }
}

fn on(event: RecordedEvent) -> Trigger<ShippingCommand> {
    Trigger(Input::Event(event))
}

/// The commands a list of process events asks for.
fn commands(events: &[ShippingEvent]) -> Vec<ShippingCommand> {
    events
        .iter()
        .flat_map(|e| Shipping::effects(e).commands)
        .collect()
}

// ---------------------------------------------------------------------------
// Pure decisions

#[test]
fn given_events_the_process_asks_for_the_right_commands() {
    let order_id = Uuid::now_v7();
    let skus = vec!["apple".to_string(), "pear".to_string()];
    let placed = OrderEvent::OrderPlaced {
        order_id,
        skus: skus.clone(),
    };
    let started = ShippingEvent::Started {
        order_id,
        skus: skus.clone(),
    };
    let reserve = |sku: &str| ShippingCommand::Reserve {
        order_id,
        sku: sku.into(),
    };
    let release = |sku: &str| ShippingCommand::Release {
        order_id,
        sku: sku.into(),
    };
    let reserved = |sku: &str, minutes| {
        recorded(
            &format!("stock-{sku}"),
            1,
            &StockEvent::Reserved {
                order_id,
                sku: sku.into(),
            },
            at(minutes),
        )
    };

    // An order is placed: reserve every item.
    let stream = format!("order-{order_id}");
    let state = given::<Shipping>([])
        .when(on(recorded(&stream, 1, &placed, at(0))))
        .then([started.clone()]);
    assert_eq!(state.stage, Stage::Reserving);
    assert_eq!(
        commands(std::slice::from_ref(&started)),
        [reserve("apple"), reserve("pear")]
    );
    // A second OrderPlaced for a running process changes nothing.
    given::<Shipping>([started.clone()])
        .when(on(recorded(&stream, 1, &placed, at(0))))
        .then([]);

    // The first reservation only counts.
    let apple = ShippingEvent::ItemReserved {
        sku: "apple".into(),
    };
    given::<Shipping>([started.clone()])
        .when(on(reserved("apple", 1)))
        .then([apple.clone()]);
    given::<Shipping>([started.clone(), apple.clone()])
        .when(on(reserved("apple", 1)))
        .then([]);
    given::<Shipping>([started.clone()])
        .when(on(reserved("plum", 1)))
        .then([]);

    // The last one charges, with a deadline 30 minutes after it.
    let charge = ShippingEvent::ChargeRequested {
        order_id,
        due: at(32),
    };
    let state = given::<Shipping>([started.clone(), apple.clone()])
        .when(on(reserved("pear", 2)))
        .then([
            ShippingEvent::ItemReserved { sku: "pear".into() },
            charge.clone(),
        ]);
    assert_eq!(state.stage, Stage::Charging);
    let effects = Shipping::effects(&charge);
    assert_eq!(effects.commands, [ShippingCommand::Charge { order_id }]);
    assert_eq!(
        effects.deadlines,
        [(CHARGE_TIMEOUT.to_string(), Due::At(at(32)))]
    );

    let pear = ShippingEvent::ItemReserved { sku: "pear".into() };
    let charging = [started.clone(), apple.clone(), pear.clone(), charge.clone()];

    // Paid: ship.
    let charged = recorded(
        &format!("payment-{order_id}"),
        1,
        &PaymentEvent::Charged { order_id },
        at(5),
    );
    let paid = ShippingEvent::Paid { order_id };
    given::<Shipping>(charging.clone())
        .when(on(charged.clone()))
        .then([paid.clone()]);
    assert_eq!(
        commands(std::slice::from_ref(&paid)),
        [ShippingCommand::Ship { order_id }]
    );

    // The deadline: release in reverse, cancel.
    let timeout = Trigger(Input::Deadline {
        name: CHARGE_TIMEOUT.into(),
        due_at: at(32),
    });
    let compensated = ShippingEvent::Compensated {
        order_id,
        release: vec!["pear".into(), "apple".into()],
        reason: "charge timed out".into(),
    };
    let state = given::<Shipping>(charging.clone())
        .when(timeout.clone())
        .then([compensated.clone()]);
    assert_eq!(state.stage, Stage::Compensating);
    assert_eq!(
        commands(&[compensated]),
        [
            release("pear"),
            release("apple"),
            ShippingCommand::Cancel {
                order_id,
                reason: "charge timed out".into()
            }
        ]
    );
    // Once paid, the deadline changes nothing.
    let mut done = charging.to_vec();
    done.push(paid);
    given::<Shipping>(done).when(timeout).then([]);

    // A refused reservation: release what is held, cancel.
    let refused = Trigger(Input::Rejected {
        command: reserve("pear"),
        reason: "pear is sold out".into(),
    });
    let events = given::<Shipping>([started.clone(), apple.clone()])
        .when(refused.clone())
        .outcome()
        .unwrap();
    assert!(
        matches!(&events[..], [ShippingEvent::Compensated { release, .. }] if release == &["apple"]),
        "{events:?}"
    );
    assert_eq!(commands(&events)[0], release("apple"));
    assert!(matches!(
        commands(&events)[1],
        ShippingCommand::Cancel { .. }
    ));

    // A reservation that lands after compensation is given back.
    let after = given::<Shipping>([started, apple])
        .when(refused)
        .then(events);
    assert_eq!(after.stage, Stage::Compensating);
    let late = Shipping::react(&after, &Input::Event(reserved("pear", 3)));
    assert_eq!(commands(&late), [release("pear")]);
}

// ---------------------------------------------------------------------------
// The runtime

#[tokio::test]
async fn handle_event_sends_commands_with_derived_ids_and_redelivery_sends_nothing_twice() {
    let store = MemoryStore::new();
    let receivers = Receivers::new(&store);
    let process = Shipper::new(store.clone(), Arc::clone(&receivers));
    let (order_id, placed) = place(&store, &["apple", "pear"]).await;

    process.handle_event(&placed).await.unwrap();
    let sent = receivers.sent();
    assert_eq!(
        sent.iter().map(|s| s.command.clone()).collect::<Vec<_>>(),
        [
            ShippingCommand::Reserve {
                order_id,
                sku: "apple".into()
            },
            ShippingCommand::Reserve {
                order_id,
                sku: "pear".into()
            },
        ]
    );
    let trigger = derive_id(placed.event_id, "shipping");
    for (k, s) in sent.iter().enumerate() {
        assert_eq!(s.outcome, Outcome::Done);
        assert_eq!(
            s.context.command_id,
            Some(derive_id(order_id, &format!("1/command/{k}"))),
            "ids derived from the instance, the process event's version and the index"
        );
        assert_eq!(s.context.metadata.correlation_id, Some(order_id));
        assert_eq!(s.context.metadata.causation_id, Some(trigger));
        assert_eq!(s.context.metadata.actor.as_deref(), Some("shipping"));
    }

    // The process recorded what it decided, tied to the triggering event.
    let process_stream = format!("shipping-{order_id}");
    let started = last_of(&store, &process_stream).await;
    assert_eq!(started.event_type, "Started");
    assert_eq!(started.metadata.correlation_id, Some(order_id));
    assert_eq!(started.metadata.causation_id, Some(placed.event_id));
    assert_eq!(
        store
            .command_outcome(trigger)
            .await
            .unwrap()
            .map(|a| a.position),
        Some(started.position),
        "the input ran as a command with the derived id"
    );
    // The receiver's events carry the process's correlation.
    let apple = last_of(&store, "stock-apple").await;
    assert_eq!(apple.event_type, "Reserved");
    assert_eq!(apple.metadata.correlation_id, Some(order_id));

    // Re-delivery: nothing recorded, nothing sent.
    process.handle_event(&placed).await.unwrap();
    process.handle_event(&placed).await.unwrap();
    assert_eq!(store.stream_version(&process_stream).await.unwrap(), 1);
    assert_eq!(receivers.sent().len(), 2, "{:#?}", receivers.sent());

    // A new Process (a restart) on the same store agrees.
    let again = Shipper::new(store.clone(), Arc::clone(&receivers));
    again.handle_event(&placed).await.unwrap();
    assert_eq!(receivers.sent().len(), 2);
    assert_eq!(store.stream_version(&process_stream).await.unwrap(), 1);

    // The reservations come back; the second one asks for the charge.
    let pear = last_of(&store, "stock-pear").await;
    process.handle_event(&apple).await.unwrap();
    process.handle_event(&pear).await.unwrap();
    process.handle_event(&pear).await.unwrap();
    process.handle_event(&apple).await.unwrap();
    assert_eq!(
        types_of(&store, &process_stream).await,
        ["Started", "ItemReserved", "ItemReserved", "ChargeRequested"]
    );
    assert_eq!(
        receivers.delivered()[2..],
        [ShippingCommand::Charge { order_id }]
    );
    assert_eq!(
        receivers.sent()[2].context.command_id,
        Some(derive_id(order_id, "4/command/0"))
    );
    receivers.assert_each_delivered_once();

    // Events for no instance are ignored.
    let stray = recorded(
        "stock-fig",
        1,
        &StockEvent::Reserved {
            order_id: Uuid::now_v7(),
            sku: "fig".into(),
        },
        at(0),
    );
    let mut orphan = stray.clone();
    orphan.payload = json!({ "sku": "fig" }).into();
    process.handle_event(&orphan).await.unwrap();
    assert_eq!(receivers.sent().len(), 3);
}

#[tokio::test]
async fn the_runner_drives_the_process_and_replays_after_a_reset_without_duplicates() {
    let store = MemoryStore::new();
    let receivers = Receivers::new(&store);
    let process = Arc::new(Shipper::new(store.clone(), Arc::clone(&receivers)));
    let (order_id, _) = place(&store, &["apple", "pear"]).await;
    let (other_id, _) = place(&store, &["fig"]).await;

    let runner = runner(&store, &process);
    runner.catch_up().await.unwrap();
    for id in [order_id, other_id] {
        assert_eq!(
            types_of(&store, &format!("order-{id}")).await,
            ["OrderPlaced", "OrderShipped"],
            "every order shipped"
        );
    }
    assert_eq!(
        types_of(&store, &format!("shipping-{order_id}")).await,
        [
            "Started",
            "ItemReserved",
            "ItemReserved",
            "ChargeRequested",
            "Paid"
        ]
    );
    let delivered = receivers.delivered();
    assert_eq!(delivered.len(), 4 + 3, "{delivered:#?}");
    receivers.assert_each_delivered_once();
    let history = store.head().await.unwrap();

    // Replay the whole log, twice: nothing new anywhere.
    for _ in 0..2 {
        store
            .save_checkpoint("shipping", Position::START)
            .await
            .unwrap();
        runner.catch_up().await.unwrap();
        assert_eq!(store.head().await.unwrap(), history, "nothing recorded");
        assert_eq!(receivers.sent().len(), 7, "{:#?}", receivers.sent());
    }
}

#[tokio::test]
async fn a_rejected_command_is_fed_back_and_compensated_once() {
    let store = MemoryStore::new();
    let receivers = Receivers::new(&store);
    let process = Arc::new(Shipper::new(store.clone(), Arc::clone(&receivers)));
    let (order_id, _) = place(&store, &["apple", "sold-out-pear"]).await;

    let runner = runner(&store, &process);
    runner.catch_up().await.unwrap();
    let sent = receivers.sent();
    let summary: Vec<_> = sent
        .iter()
        .map(|s| (s.command.clone(), s.outcome))
        .collect();
    let reason = "cannot reserve sold-out-pear: sold-out-pear is sold out".to_string();
    assert_eq!(
        summary,
        [
            (
                ShippingCommand::Reserve {
                    order_id,
                    sku: "apple".into()
                },
                Outcome::Done
            ),
            (
                ShippingCommand::Reserve {
                    order_id,
                    sku: "sold-out-pear".into()
                },
                Outcome::Rejected
            ),
            // Nothing was held yet when the refusal came back: just cancel.
            (
                ShippingCommand::Cancel {
                    order_id,
                    reason: reason.clone()
                },
                Outcome::Done
            ),
            // The apple reservation lands afterwards and is given back.
            (
                ShippingCommand::Release {
                    order_id,
                    sku: "apple".into()
                },
                Outcome::Done
            ),
        ]
    );
    let process_stream = format!("shipping-{order_id}");
    assert_eq!(
        types_of(&store, &process_stream).await,
        ["Started", "Compensated", "LateReleased"]
    );
    let compensated = &store.read_stream(&process_stream, 2, 1).await.unwrap()[0];
    let refused_id = sent[1].context.command_id.unwrap();
    assert_eq!(
        compensated.metadata.causation_id,
        Some(refused_id),
        "the refusal is caused by the refused command"
    );
    assert_eq!(
        sent[2].context.metadata.causation_id,
        Some(derive_id(refused_id, "rejected")),
        "compensation is caused by the fed-back refusal"
    );
    assert_eq!(
        types_of(&store, &format!("order-{order_id}")).await,
        ["OrderPlaced", "OrderCancelled"]
    );
    assert_eq!(
        types_of(&store, "stock-apple").await,
        ["Reserved", "Released"]
    );

    // Re-delivery after a reset: neither the refused command nor the
    // compensation goes out again.
    let head = store.head().await.unwrap();
    store
        .save_checkpoint("shipping", Position::START)
        .await
        .unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!(store.head().await.unwrap(), head);
    receivers.assert_each_delivered_once();
    assert_eq!(receivers.sent().len(), 4, "{:#?}", receivers.sent());
}

#[tokio::test]
async fn a_refusal_survives_a_failure_of_its_compensation() {
    let store = MemoryStore::new();
    let receivers = Receivers::new(&store);
    receivers.fail("Cancel", 2);
    let process = Arc::new(Shipper::new(store.clone(), Arc::clone(&receivers)));
    let (order_id, _) = place(&store, &["apple", "sold-out-pear"]).await;

    runner(&store, &process).catch_up().await.unwrap();
    let summary: Vec<_> = receivers
        .sent()
        .iter()
        .map(|s| match &s.command {
            ShippingCommand::Reserve { sku, .. } => format!("reserve {sku}: {:?}", s.outcome),
            ShippingCommand::Release { sku, .. } => format!("release {sku}: {:?}", s.outcome),
            ShippingCommand::Cancel { .. } => format!("cancel: {:?}", s.outcome),
            other => format!("{other:?}: {:?}", s.outcome),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "reserve apple: Done",
            "reserve sold-out-pear: Rejected",
            "cancel: Transient",
            // The retries replay the recorded refusal instead of asking again.
            "cancel: Transient",
            "cancel: Done",
            "release apple: Done",
        ]
    );
    receivers.assert_each_delivered_once();
    assert_eq!(
        types_of(&store, &format!("order-{order_id}")).await,
        ["OrderPlaced", "OrderCancelled"]
    );
    assert_eq!(
        types_of(&store, &format!("shipping-{order_id}")).await,
        ["Started", "Compensated", "LateReleased"]
    );
}

#[tokio::test]
async fn a_transient_dispatch_error_is_retried_without_duplicates() {
    let store = MemoryStore::new();
    let receivers = Receivers::new(&store);
    receivers.fail("Charge", 3);
    let process = Arc::new(Shipper::new(store.clone(), Arc::clone(&receivers)));
    let (order_id, _) = place(&store, &["apple", "pear"]).await;

    let runner = runner(&store, &process);
    runner.catch_up().await.unwrap();
    let charges: Vec<_> = receivers
        .sent()
        .into_iter()
        .filter(|s| matches!(s.command, ShippingCommand::Charge { .. }))
        .map(|s| (s.outcome, s.context.command_id))
        .collect();
    let id = Some(derive_id(order_id, "4/command/0"));
    assert_eq!(
        charges,
        [
            (Outcome::Transient, id),
            (Outcome::Transient, id),
            (Outcome::Transient, id),
            (Outcome::Done, id)
        ],
        "retried with the same command id until it went through"
    );
    // Retried by the process, for that instance alone: the runner did not
    // have to apply the batch again.
    assert_eq!(runner.progress().borrow().retries, 0);
    receivers.assert_each_delivered_once();
    assert_eq!(receivers.delivered().len(), 4, "{:#?}", receivers.sent());
    assert_eq!(
        types_of(&store, &format!("shipping-{order_id}")).await,
        [
            "Started",
            "ItemReserved",
            "ItemReserved",
            "ChargeRequested",
            "Paid"
        ],
        "retries recorded nothing twice"
    );
    assert_eq!(
        types_of(&store, &format!("payment-{order_id}")).await,
        ["Charged"]
    );
    assert_eq!(
        types_of(&store, &format!("order-{order_id}")).await,
        ["OrderPlaced", "OrderShipped"]
    );
    assert!(store.dead_letters("shipping").await.unwrap().is_empty());
}

#[tokio::test]
async fn deadlines_survive_a_restart_and_fire_once() {
    let store = MemoryStore::new();
    let (order_id, placed) = place(&store, &["apple"]).await;
    let reserved;
    {
        let receivers = Receivers::new(&store);
        let process = Shipper::new(store.clone(), Arc::clone(&receivers));
        process.handle_event(&placed).await.unwrap();
        reserved = last_of(&store, "stock-apple").await;
        process.handle_event(&reserved).await.unwrap();
        // The charge went out, but its answer never reaches the process.
        assert_eq!(
            receivers.delivered().last(),
            Some(&ShippingCommand::Charge { order_id })
        );
        // Not due yet.
        assert_eq!(process.fire_deadlines(Utc::now()).await.unwrap(), 0);
    } // the process goes away

    let due = reserved.recorded_at + chrono::Duration::minutes(30);
    let later = Utc::now() + chrono::Duration::hours(1);
    let stored = store.deadlines("shipping", 10).await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let deadline = &stored[0];
    assert_eq!(deadline.instance, order_id);
    assert_eq!(deadline.name, CHARGE_TIMEOUT);
    assert_eq!(deadline.due_at, due);
    assert_eq!(deadline.process, "shipping");
    assert_eq!(deadline.id, derive_id(order_id, "3/deadline/0"));

    // A new process on the same store fires it.
    let receivers = Receivers::new(&store);
    let process = Shipper::new(store.clone(), Arc::clone(&receivers));
    // A receiver that is down keeps the deadline for the next round, with
    // what went wrong.
    receivers.fail("Release", 1);
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 0);
    let failed = store.deadlines("shipping", 10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 1);
    assert!(!failed[0].dead_lettered);
    assert!(
        failed[0].error.as_deref().unwrap_or("").contains("Release"),
        "{failed:?}"
    );
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 1);
    assert_eq!(
        receivers.delivered(),
        [
            ShippingCommand::Release {
                order_id,
                sku: "apple".into()
            },
            ShippingCommand::Cancel {
                order_id,
                reason: "charge timed out".into()
            },
        ]
    );
    let process_stream = format!("shipping-{order_id}");
    let compensated = last_of(&store, &process_stream).await;
    assert_eq!(compensated.event_type, "Compensated");
    assert_eq!(compensated.metadata.causation_id, Some(deadline.id));
    assert_eq!(
        receivers.sent()[0].context.metadata.causation_id,
        Some(deadline.id)
    );

    // Fired once: a second call, or a third after a restart, fires nothing.
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 0);
    let restarted = Shipper::new(store.clone(), Arc::clone(&receivers));
    assert_eq!(restarted.fire_deadlines(later).await.unwrap(), 0);

    // Re-delivering the event that set the deadline does not set it again.
    restarted.handle_event(&reserved).await.unwrap();
    assert!(
        store.deadlines("shipping", 10).await.unwrap().is_empty(),
        "a fired deadline came back"
    );
    assert_eq!(restarted.fire_deadlines(later).await.unwrap(), 0);
    assert_eq!(receivers.sent().len(), 3, "{:#?}", receivers.sent());
    receivers.assert_each_delivered_once();
    assert_eq!(
        types_of(&store, &process_stream).await,
        ["Started", "ItemReserved", "ChargeRequested", "Compensated"]
    );
    assert_eq!(
        types_of(&store, &format!("order-{order_id}")).await,
        ["OrderPlaced", "OrderCancelled"]
    );
}

/// An order of one apple, driven by hand until the process charges it (and
/// set its charge timeout): the order, its `OrderPlaced`, the process.
async fn charging(store: &MemoryStore) -> (Uuid, RecordedEvent, Shipper) {
    let (order_id, placed) = place(store, &["apple"]).await;
    let process = Shipper::new(store.clone(), Receivers::new(store));
    process.handle_event(&placed).await.unwrap();
    let reserved = last_of(store, "stock-apple").await;
    process.handle_event(&reserved).await.unwrap();
    (order_id, placed, process)
}

#[tokio::test]
async fn a_lagging_process_reads_events_from_before_a_deadline_before_firing_it() {
    let store = MemoryStore::new();
    let (_, placed, process) = charging(&store).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(store.deadlines("shipping", 10).await.unwrap().len(), 1);

    // A runner drives the process and has read only up to `placed`, while an
    // event it handles, recorded before the deadline fell due, waits unread.
    store
        .save_checkpoint("shipping", placed.position)
        .await
        .unwrap();
    assert_eq!(
        process.fire_deadlines(later).await.unwrap(),
        0,
        "fired in wall-clock time"
    );
    assert_eq!(store.deadlines("shipping", 10).await.unwrap().len(), 1);

    // Once it has read the log, the deadline fires.
    let head = store.head().await.unwrap();
    store.save_checkpoint("shipping", head).await.unwrap();
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 1);
}

#[tokio::test]
async fn an_answer_in_time_cancels_the_deadline_that_waited_for_it() {
    let store = MemoryStore::new();
    let (order_id, _, process) = charging(&store).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    let pending = store.deadlines("shipping", 10).await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");

    let charged = last_of(&store, &format!("payment-{order_id}")).await;
    assert_eq!(charged.event_type, "Charged");
    process.handle_event(&charged).await.unwrap();
    assert_eq!(
        store.deadlines("shipping", 10).await.unwrap(),
        [],
        "the charge timeout is still pending after the charge"
    );
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 0);
}

#[tokio::test]
async fn a_deadline_that_keeps_failing_becomes_a_dead_letter_until_retried() {
    let store = MemoryStore::new();
    let (order_id, _, _) = charging(&store).await;
    let receivers = Receivers::new(&store);
    let process =
        Shipper::new(store.clone(), Arc::clone(&receivers)).with_options(ProcessOptions {
            deadline_attempts: 3,
            deadline_retry: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(1),
            },
            ..ProcessOptions::default()
        });
    let later = Utc::now() + chrono::Duration::hours(1);
    receivers.fail("Release", 1_000);
    for _ in 0..3 {
        assert_eq!(process.fire_deadlines(later).await.unwrap(), 0);
    }
    let dead = store.deadlines("shipping", 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].dead_lettered, "{dead:?}");
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.as_deref().unwrap_or("").contains("Release"));
    // Set aside: not claimed again, nothing due.
    assert_eq!(store.next_deadline("shipping").await.unwrap(), None);
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 0);
    assert_eq!(receivers.sent().len(), 3, "no more tries while dead");

    // The receiver is fixed; an operator asks for a retry.
    receivers.fail("Release", 0);
    assert_eq!(store.retry_dead_letters("shipping").await.unwrap(), 1);
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 1);
    assert!(store.deadlines("shipping", 10).await.unwrap().is_empty());
    assert_eq!(
        types_of(&store, &format!("order-{order_id}")).await,
        ["OrderPlaced", "OrderCancelled"]
    );
    receivers.assert_each_delivered_once();
}

#[tokio::test]
async fn a_claimed_deadline_is_not_fired_twice_nor_cancelled() {
    let store = MemoryStore::new();
    let (order_id, _, process) = charging(&store).await;
    let later = Utc::now() + chrono::Duration::hours(1);
    // Another firer claimed it (and is still at it, or died).
    let claimed = store
        .claim_deadlines("shipping", later, 10, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(process.fire_deadlines(later).await.unwrap(), 0);
    // An answer that arrives now does not remove a deadline that started firing.
    store
        .cancel_deadlines("shipping", order_id, CHARGE_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(store.deadlines("shipping", 10).await.unwrap().len(), 1);
    // The firer died: after its hold, another fires it.
    let after_hold = later + chrono::Duration::hours(1);
    assert_eq!(process.fire_deadlines(after_hold).await.unwrap(), 1);
}

#[tokio::test]
async fn an_event_whose_commands_keep_failing_becomes_a_dead_letter() {
    let store = MemoryStore::new();
    let receivers = Receivers::new(&store);
    receivers.fail("Charge", 1_000);
    let process = Arc::new(
        Shipper::new(store.clone(), Arc::clone(&receivers)).with_options(ProcessOptions {
            retry: Backoff {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(10),
            },
            retry_for: Duration::from_millis(100),
            ..ProcessOptions::default()
        }),
    );
    let (stuck, _) = place(&store, &["apple"]).await;
    let runner =
        ProjectionRunner::new(store.clone(), Arc::clone(&process)).with_options(RunnerOptions {
            failure_policy: FailurePolicy::DeadLetter { max_attempts: 2 },
            ..options()
        });
    runner.catch_up().await.unwrap();
    let dead_letters = store.dead_letters("shipping").await.unwrap();
    assert_eq!(dead_letters.len(), 1, "{dead_letters:?}");
    assert_eq!(dead_letters[0].event.event_type, "Reserved");
    let error = dead_letters[0].error.as_deref().unwrap_or("");
    assert!(
        error.contains("Charge") && error.contains("receiver unreachable"),
        "{error}"
    );

    // Other instances go on: the dead letter holds back its own instance,
    // not the stream its event came from (apples are reserved for everyone).
    receivers.fail("Charge", 0);
    let (other, _) = place(&store, &["apple"]).await;
    runner.catch_up().await.unwrap();
    assert!(
        types_of(&store, &format!("shipping-{other}"))
            .await
            .contains(&"Paid".to_owned()),
        "{:?}",
        types_of(&store, &format!("shipping-{other}")).await
    );

    // Retried by an operator, the stuck order goes through.
    store.retry_dead_letters("shipping").await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        let runner =
            ProjectionRunner::new(store.clone(), Arc::clone(&process)).with_options(options());
        async move { runner.run(shutdown).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !types_of(&store, &format!("shipping-{stuck}"))
        .await
        .contains(&"Paid".to_owned())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retried order never went through"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(store.dead_letters("shipping").await.unwrap().is_empty());
}
