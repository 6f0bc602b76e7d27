//! Errors as AWS shapes them: a status, a code clients branch on, and a
//! message. Weir's own error codes are translated here, in one place.

use weir_proto::ErrorCode;

use crate::service::RequestError;

/// One Kinesis API error: sent as `{"__type": code, "message": message}`
/// with the code in `x-amzn-ErrorType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct KinesisError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl From<crate::aws::sigv4::SignatureError> for KinesisError {
    fn from(error: crate::aws::sigv4::SignatureError) -> Self {
        Self::new(error.code, error.message)
    }
}

impl KinesisError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: 500,
            code: "InternalFailure",
            message: message.into(),
        }
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new("InvalidArgumentException", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }

    /// Back-pressure: every AWS SDK, Fluent Bit and Vector retry it.
    pub fn throughput(message: impl Into<String>) -> Self {
        Self::new("ProvisionedThroughputExceededException", message)
    }

    /// The AWS code for one of Weir's error codes (also used per record in
    /// `PutRecords`, where AWS knows only this code and `InternalFailure`).
    pub fn code_for(code: ErrorCode) -> (u16, &'static str) {
        match code {
            ErrorCode::StreamNotFound | ErrorCode::ShardNotFound => {
                (400, "ResourceNotFoundException")
            }
            ErrorCode::StreamExists | ErrorCode::StreamInUse => (400, "ResourceInUseException"),
            ErrorCode::Overloaded | ErrorCode::StorageFull => {
                (400, "ProvisionedThroughputExceededException")
            }
            ErrorCode::LimitExceeded => (400, "LimitExceededException"),
            ErrorCode::Unauthenticated => (400, "UnrecognizedClientException"),
            ErrorCode::PermissionDenied => (400, "AccessDeniedException"),
            ErrorCode::ShuttingDown => (503, "ServiceUnavailable"),
            ErrorCode::StorageFailure | ErrorCode::Internal | ErrorCode::Unknown => {
                (500, "InternalFailure")
            }
            _ => (400, "InvalidArgumentException"),
        }
    }
}

impl From<RequestError> for KinesisError {
    fn from(error: RequestError) -> Self {
        let (status, code) = Self::code_for(error.code);
        Self {
            status,
            code,
            message: error.message,
        }
    }
}

/// AWS's validation message: "1 validation error detected: Value 'x' at
/// 'streamName' failed to satisfy constraint: ...", collected field by
/// field so one answer names every bad field.
#[derive(Default)]
pub struct Validation {
    failures: Vec<String>,
}

impl Validation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `value` at `field` (AWS names fields in camelCase)
    /// breaks `constraint`.
    pub fn fail(&mut self, value: &str, field: &str, constraint: &str) {
        self.failures.push(format!(
            "Value '{value}' at '{field}' failed to satisfy constraint: {constraint}"
        ));
    }

    pub fn required(&mut self, field: &str) {
        self.failures.push(format!(
            "Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ));
    }

    /// The error for one missing field alone.
    pub fn missing(field: &str) -> KinesisError {
        let mut validation = Self::new();
        validation.required(field);
        match validation.finish() {
            Err(error) => error,
            Ok(()) => KinesisError::invalid_argument(format!("{field} is required")),
        }
    }

    pub fn check_length(&mut self, value: &str, field: &str, min: usize, max: usize) {
        let length = value.chars().count();
        if length < min {
            self.fail(
                value,
                field,
                &format!("Member must have length greater than or equal to {min}"),
            );
        } else if length > max {
            self.fail(
                value,
                field,
                &format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    pub fn check_range(&mut self, value: i64, field: &str, min: i64, max: i64) {
        if value < min {
            self.fail(
                &value.to_string(),
                field,
                &format!("Member must have value greater than or equal to {min}"),
            );
        } else if value > max {
            self.fail(
                &value.to_string(),
                field,
                &format!("Member must have value less than or equal to {max}"),
            );
        }
    }

    pub fn finish(self) -> Result<(), KinesisError> {
        match self.failures.len() {
            0 => Ok(()),
            1 => Err(KinesisError::new(
                "ValidationException",
                format!("1 validation error detected: {}", self.failures[0]),
            )),
            n => Err(KinesisError::new(
                "ValidationException",
                format!(
                    "{n} validation errors detected: {}",
                    self.failures.join("; ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages_have_the_aws_form() {
        let mut validation = Validation::new();
        validation.check_length("", "partitionKey", 1, 256);
        assert_eq!(
            validation.finish().expect_err("invalid").message,
            "1 validation error detected: Value '' at 'partitionKey' failed to satisfy \
             constraint: Member must have length greater than or equal to 1"
        );
        let mut validation = Validation::new();
        validation.check_range(0, "shardCount", 1, 100);
        validation.required("streamName");
        let error = validation.finish().expect_err("invalid");
        assert_eq!(error.code, "ValidationException");
        assert!(
            error
                .message
                .starts_with("2 validation errors detected: Value '0' at 'shardCount'"),
            "{}",
            error.message
        );
        assert!(Validation::new().finish().is_ok());
    }

    #[test]
    fn back_pressure_is_retryable_throughput_and_faults_are_500() {
        let (status, code) = KinesisError::code_for(ErrorCode::Overloaded);
        assert_eq!(
            (status, code),
            (400, "ProvisionedThroughputExceededException")
        );
        assert_eq!(KinesisError::code_for(ErrorCode::StorageFailure).0, 500);
    }
}
