//! The gRPC server: the flight search and server reflection on their own
//! listener, with graceful shutdown.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::search::FlightSearchService;
use super::{GrpcSettings, proto};
use crate::search::FlightQueries;

/// Why the gRPC server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The reflection service could not read the proto's descriptors.
    #[error("cannot serve reflection of proto/flights.proto")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The server failed.
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// Serves the flight search ([`FlightSearchService`] over `queries`) and
/// server reflection (v1 and v1alpha, so that `grpcurl` needs no proto
/// file) on `listener` until `shutdown` is cancelled.
///
/// On shutdown it stops accepting, lets calls in flight finish (streams end
/// with `UNAVAILABLE` `shutting_down` at their next page), and waits for
/// that at most [`GrpcSettings::drain_timeout`]; connections still open
/// then are dropped.
pub async fn serve(
    listener: TcpListener,
    queries: FlightQueries,
    settings: &GrpcSettings,
    shutdown: CancellationToken,
) -> Result<(), GrpcError> {
    let search = FlightSearchService::new(queries, settings, shutdown.clone()).into_server();
    // google.rpc's descriptors too: clients that resolve types by
    // reflection (grpcurl) can then decode the statuses' ErrorInfo.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(GrpcError::Reflection)?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(GrpcError::Reflection)?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .add_service(search)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let mut server = std::pin::pin!(server);
    let served = tokio::select! {
        served = server.as_mut() => served,
        () = shutdown.cancelled() => {
            match tokio::time::timeout(settings.drain_timeout, server.as_mut()).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!("gRPC calls still open after the drain timeout; closing them");
                    Ok(())
                }
            }
        }
    };
    served.map_err(GrpcError::Serve)
}
