//! The `FlightService` of `proto/flights.proto`: the REST API's flight
//! queries over gRPC, with the same validation, read side and
//! read-your-writes wait ([`FlightQueries`]).

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::deadline::{Deadline, client_timeout};
use super::proto::flight_service_server::{FlightService, FlightServiceServer};
use super::proto::{FlightSearchRequest, FlightSearchResponse, FlightView, GetFlightRequest};
use super::{GrpcSettings, convert, status};
use annals::Position;

use crate::search::{FlightQueries, FlightSearch, MAX_LIMIT, SearchError, flight_id};

/// The metadata key of the position a stream or a lookup has certainly
/// seen (a search answers it in its body), as the REST API's header.
pub const POSITION_METADATA: &str = "x-annals-position";

/// The flight search over gRPC. Every call is bounded by the client's
/// deadline (`grpc-timeout`) or, without one, by the server's request
/// timeout; a stream only by the client's deadline, each page it reads by
/// the request timeout.
#[derive(Debug, Clone)]
pub struct FlightSearchService {
    queries: FlightQueries,
    request_timeout: Duration,
    shutdown: CancellationToken,
}

impl FlightSearchService {
    /// The service over `queries`; streams stop when `shutdown` is cancelled.
    pub fn new(
        queries: FlightQueries,
        settings: &GrpcSettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            queries,
            request_timeout: settings.request_timeout,
            shutdown,
        }
    }

    /// The service as tonic serves it.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
    }

    /// Waits for the read side to see `min_position` before `deadline`
    /// (at most the configured wait); answers a position it has seen.
    async fn barrier(
        &self,
        min_position: Option<Position>,
        deadline: &Deadline,
    ) -> Result<Position, Status> {
        let wait = deadline.remaining();
        // Shorter than the configured wait: a read side still behind then is
        // the deadline's doing.
        let cut_short = wait < self.queries.read_wait();
        let barrier = self.queries.read_barrier(min_position, wait);
        match timeout_at(deadline.at(), barrier).await {
            Ok(answer) => answer.map_err(|e| status::from_query(e, deadline, cut_short)),
            // The wait ends at the deadline too, and its timer may fire a
            // moment after the deadline's: the same answer.
            Err(_) => Err(match min_position {
                Some(wanted) if cut_short => status::behind_at(deadline, wanted),
                _ => status::timed_out(deadline),
            }),
        }
    }

    fn validate(request: &FlightSearchRequest) -> Result<FlightSearch, Status> {
        let sort = convert::sort_name(request.sort);
        convert::search_input(request, sort.as_deref())
            .validate()
            .map_err(|e| status::invalid(&e))
    }
}

fn invalid(error: SearchError) -> Status {
    status::invalid(&error)
}

/// `value` with `position` in the metadata, under [`POSITION_METADATA`].
fn with_position<T>(value: T, position: Position) -> Response<T> {
    let mut response = Response::new(value);
    if let Ok(value) = MetadataValue::try_from(position.to_string()) {
        response.metadata_mut().insert(POSITION_METADATA, value);
    }
    response
}

#[tonic::async_trait]
impl FlightService for FlightSearchService {
    async fn search_flights(
        &self,
        request: Request<FlightSearchRequest>,
    ) -> Result<Response<FlightSearchResponse>, Status> {
        let deadline = Deadline::of(request.metadata(), self.request_timeout);
        let request = request.into_inner();
        let search = Self::validate(&request)?;
        let min_position = convert::min_position(&request.min_position).map_err(invalid)?;
        let position = self.barrier(min_position, &deadline).await?;
        let page = timeout_at(deadline.at(), self.queries.reads().search(&search))
            .await
            .map_err(|_| status::timed_out(&deadline))?
            .map_err(status::from_read)?;
        Ok(Response::new(FlightSearchResponse {
            flights: page.flights.into_iter().map(convert::flight).collect(),
            next: page.next.unwrap_or_default(),
            position: position.to_string(),
        }))
    }

    type StreamFlightsStream = BoxStream<'static, Result<FlightView, Status>>;

    async fn stream_flights(
        &self,
        request: Request<FlightSearchRequest>,
    ) -> Result<Response<Self::StreamFlightsStream>, Status> {
        let client = client_timeout(request.metadata());
        let first = Deadline::new(client, self.request_timeout);
        let request = request.into_inner();
        let mut search = Self::validate(&request)?;
        if request.limit.is_none() {
            search.limit = MAX_LIMIT;
        }
        let min_position = convert::min_position(&request.min_position).map_err(invalid)?;
        let position = self.barrier(min_position, &first).await?;
        let mut pages = Pages {
            queries: self.queries.clone(),
            search,
            buffer: VecDeque::new(),
            last_page: false,
            over: false,
            // The stream's own end: the client's deadline, if any.
            end: client.map(Deadline::client),
            request_timeout: self.request_timeout,
            shutdown: self.shutdown.clone(),
        };
        // The first page before the answer: a cursor the read side refuses,
        // or a read side that does not answer, fails the call itself.
        pages.read_page().await?;
        Ok(with_position(pages.into_stream(), position))
    }

    async fn get_flight(
        &self,
        request: Request<GetFlightRequest>,
    ) -> Result<Response<FlightView>, Status> {
        let deadline = Deadline::of(request.metadata(), self.request_timeout);
        let request = request.into_inner();
        let id = flight_id(&request.id).map_err(invalid)?;
        let min_position = convert::min_position(&request.min_position).map_err(invalid)?;
        let position = self.barrier(min_position, &deadline).await?;
        let flight = timeout_at(deadline.at(), self.queries.reads().flight(id))
            .await
            .map_err(|_| status::timed_out(&deadline))?
            .map_err(status::from_read)?;
        match flight {
            Some(view) => Ok(with_position(convert::flight(view), position)),
            None => Err(status::flight_not_found(id)),
        }
    }
}

/// A stream's state: the search with the cursor of the next page, and the
/// flights read but not yet sent.
struct Pages {
    queries: FlightQueries,
    search: FlightSearch,
    buffer: VecDeque<crate::search::FlightView>,
    last_page: bool,
    /// Ended by an error: nothing more is sent.
    over: bool,
    /// The client's deadline, if it gave one.
    end: Option<Deadline>,
    request_timeout: Duration,
    shutdown: CancellationToken,
}

impl Pages {
    /// The flights one by one, reading a page only when the previous one
    /// was sent (so a slow client holds one page, not the result set).
    fn into_stream(self) -> BoxStream<'static, Result<FlightView, Status>> {
        stream::unfold(self, |mut pages| async move {
            let item = pages.next().await?;
            Some((item, pages))
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<Result<FlightView, Status>> {
        loop {
            if self.over {
                return None;
            }
            if let Some(end) = self.end.filter(Deadline::passed) {
                return self.fail(status::timed_out(&end));
            }
            if let Some(view) = self.buffer.pop_front() {
                return Some(Ok(convert::flight(view)));
            }
            if self.last_page {
                return None;
            }
            if self.shutdown.is_cancelled() {
                return self.fail(status::shutting_down());
            }
            if let Err(status) = self.read_page().await {
                return self.fail(status);
            }
        }
    }

    /// Reads the next page into the buffer, within the client's deadline and
    /// the request timeout.
    async fn read_page(&mut self) -> Result<(), Status> {
        let server = Deadline::new(None, self.request_timeout);
        let deadline = match self.end {
            Some(end) if end.at() < server.at() => end,
            _ => server,
        };
        let page = timeout_at(deadline.at(), self.queries.reads().search(&self.search))
            .await
            .map_err(|_| status::timed_out(&deadline))?
            .map_err(status::from_read)?;
        self.buffer.extend(page.flights);
        match page.next {
            Some(next) => self.search.after = Some(next),
            None => self.last_page = true,
        }
        Ok(())
    }

    fn fail(&mut self, status: Status) -> Option<Result<FlightView, Status>> {
        self.over = true;
        Some(Err(status))
    }
}
