//! AddPlugin and the control-plane requests: plugins, processors, sinks,
//! state, tokens.

use std::sync::Arc;

use weir_proto::admin::{AdminRequest, AdminResponse, ServerInfo};
use weir_proto::{ErrorCode, Response};

use super::{RequestError, Service, blocking, validate_name};
use crate::plugin::PluginError;
use crate::processor::ProcessorError;
use crate::sink::SinkError;

/// State entries one `GetState` may return.
const STATE_ENTRIES_MAX: u32 = 10_000;

impl From<ProcessorError> for RequestError {
    fn from(error: ProcessorError) -> Self {
        let code = match &error {
            ProcessorError::PluginNotFound { .. } => ErrorCode::PluginNotFound,
            ProcessorError::PluginExists { .. } | ProcessorError::Exists { .. } => {
                ErrorCode::AlreadyExists
            }
            ProcessorError::PluginInUse { .. } => ErrorCode::PluginInUse,
            ProcessorError::NotFound { .. } => ErrorCode::ProcessorNotFound,
            ProcessorError::InvalidSettings(_) => ErrorCode::InvalidArgument,
            ProcessorError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            ProcessorError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ProcessorError::Plugin(PluginError::Host(_)) => ErrorCode::Internal,
            ProcessorError::Plugin(PluginError::InitRejected(_)) => ErrorCode::InvalidConfig,
            ProcessorError::Plugin(_) => ErrorCode::InvalidPlugin,
            ProcessorError::Storage(storage) => return Self::from_storage(storage),
        };
        Self::new(code, error.to_string())
    }
}

impl From<SinkError> for RequestError {
    fn from(error: SinkError) -> Self {
        let code = match &error {
            SinkError::NotFound { .. } => ErrorCode::SinkNotFound,
            SinkError::Exists { .. } => ErrorCode::AlreadyExists,
            SinkError::InvalidSettings(_) => ErrorCode::InvalidArgument,
            SinkError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            SinkError::Thread(_) => ErrorCode::Internal,
            SinkError::Storage(storage) => return Self::from_storage(storage),
        };
        Self::new(code, error.to_string())
    }
}

pub async fn add_plugin(
    service: &Arc<Service>,
    name: &str,
    component: &[u8],
) -> Result<Response, RequestError> {
    let info = service.processors.add_plugin(name, component).await?;
    Ok(Response::Admin(AdminResponse::Plugin(info)))
}

pub async fn handle(
    service: &Arc<Service>,
    request: AdminRequest,
) -> Result<Response, RequestError> {
    let processors = &service.processors;
    let response = match request {
        AdminRequest::ListPlugins => AdminResponse::Plugins(processors.list_plugins().await?),
        AdminRequest::DescribePlugin { name } => {
            AdminResponse::Plugin(processors.describe_plugin(&name).await?)
        }
        AdminRequest::DeletePlugin { name } => {
            processors.remove_plugin(&name).await?;
            AdminResponse::Done
        }
        AdminRequest::CreateProcessor(settings) => {
            let sink_flows = service.sinks.flows().await;
            AdminResponse::Processor(Box::new(processors.create(*settings, &sink_flows).await?))
        }
        AdminRequest::ListProcessors => AdminResponse::Processors(processors.list().await?),
        AdminRequest::DescribeProcessor { name } => {
            AdminResponse::Processor(Box::new(processors.describe(&name).await?))
        }
        AdminRequest::PauseProcessor { name } => {
            processors.pause(&name).await?;
            AdminResponse::Done
        }
        AdminRequest::ResumeProcessor { name } => {
            let sink_flows = service.sinks.flows().await;
            processors.resume(&name, &sink_flows).await?;
            AdminResponse::Done
        }
        AdminRequest::DeleteProcessor { name } => {
            processors.delete(&name).await?;
            AdminResponse::Done
        }
        AdminRequest::UpdateProcessor { name, limits } => {
            AdminResponse::Processor(Box::new(processors.update(&name, limits).await?))
        }
        AdminRequest::SeekProcessor { name, to, shard } => {
            AdminResponse::Processor(Box::new(processors.seek(&name, shard, to).await?))
        }
        AdminRequest::CreateSink(settings) => {
            let processor_flows = processors.flows().await;
            AdminResponse::Sink(Box::new(
                service.sinks.create(*settings, &processor_flows).await?,
            ))
        }
        AdminRequest::ListSinks => AdminResponse::Sinks(service.sinks.list().await?),
        AdminRequest::DescribeSink { name } => {
            AdminResponse::Sink(Box::new(service.sinks.describe(&name).await?))
        }
        AdminRequest::PauseSink { name } => {
            service.sinks.pause(&name).await?;
            AdminResponse::Done
        }
        AdminRequest::ResumeSink { name } => {
            service.sinks.resume(&name).await?;
            AdminResponse::Done
        }
        AdminRequest::SeekSink { name, to, shard } => {
            AdminResponse::Sink(Box::new(service.sinks.seek(&name, shard, to).await?))
        }
        AdminRequest::DeleteSink { name } => {
            service.sinks.delete(&name).await?;
            AdminResponse::Done
        }
        AdminRequest::ServerInfo => AdminResponse::Server(ServerInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: service.started.elapsed().as_millis() as u64,
            disk_bytes: service.storage.disk_bytes().unwrap_or(0),
            resident_bytes: crate::system::resident_bytes(),
            auth_enabled: service.auth.enabled(),
            writes_refused: service.storage.space_check().err().map(|e| e.to_string()),
        }),
        AdminRequest::GetState {
            processor,
            key,
            prefix,
            limit,
        } => {
            let limit = limit.clamp(1, STATE_ENTRIES_MAX) as usize;
            AdminResponse::State(
                processors
                    .state(&processor, key.as_deref(), prefix.as_deref(), limit)
                    .await?,
            )
        }
        AdminRequest::CreateToken {
            name,
            roles,
            streams,
        } => {
            validate_name("token", &name, ErrorCode::InvalidArgument)?;
            for stream in streams.iter().flatten() {
                validate_name("stream", stream, ErrorCode::InvalidStreamName)?;
            }
            let service = service.clone();
            AdminResponse::Token(
                blocking(move || Ok(service.auth.create(&name, roles, streams)?)).await?,
            )
        }
        AdminRequest::ListTokens => AdminResponse::Tokens(service.auth.list()),
        AdminRequest::DeleteToken { name } => {
            let service = service.clone();
            blocking(move || Ok(service.auth.revoke(&name)?)).await?;
            AdminResponse::Done
        }
    };
    Ok(Response::Admin(response))
}
