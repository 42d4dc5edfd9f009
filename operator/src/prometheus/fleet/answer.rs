//! Reading Prometheus' `/api/v1/query` answers straight into [`Series`].

use std::collections::HashMap;

use crate::signals::{Measured, UnknownReason};

/// One sample of an instant-vector answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series' labels.
    pub labels: HashMap<String, String>,
    /// When the query was evaluated (Unix seconds, Prometheus' clock).
    pub timestamp: f64,
    /// The sample value, NaN and infinities included.
    pub value: f64,
}

/// The answer to one query: its series, or why there are none.
pub type QueryOutcome = Measured<Vec<Series>>;

/// Why an `/api/v1/query` answer holds no series.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Prometheus answered with `"status": "error"`.
    #[error("prometheus refused the query: {error_type}: {error}")]
    Refused {
        /// Prometheus' `errorType` (`bad_data`, `timeout`, `execution`, ...).
        error_type: String,
        /// Prometheus' message.
        error: String,
    },
    /// The body is not a Prometheus answer.
    #[error("the answer is not a prometheus query response")]
    Malformed(#[source] serde_json::Error),
    /// A success without data, or data of a type an instant query does not return.
    #[error("the answer holds {0} data, not an instant vector or scalar")]
    ResultType(String),
}

/// The envelope of an `/api/v1/query` answer. `result` stays raw JSON (borrowed from the body)
/// until `resultType` says what it holds, so the answer is read once, straight into
/// [`Series`], with no intermediate tree of the whole body.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: Option<AnswerData<'a>>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(serde::Deserialize)]
struct AnswerData<'a> {
    #[serde(rename = "resultType", borrow)]
    result_type: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    result: &'a serde_json::value::RawValue,
    /// Present when the query asked for `stats=all` and Prometheus (2.35 or later) keeps them.
    stats: Option<AnswerStats>,
}

#[derive(serde::Deserialize)]
struct AnswerStats {
    samples: Option<SampleStats>,
}

#[derive(serde::Deserialize)]
struct SampleStats {
    #[serde(rename = "totalQueryableSamples")]
    total_queryable_samples: Option<u64>,
}

/// A successful answer: its series, and how many samples Prometheus loaded to compute them
/// (`totalQueryableSamples` of its query statistics; `None` when it did not say).
#[derive(Debug)]
pub struct Answered {
    /// The series.
    pub series: Vec<Series>,
    /// Samples Prometheus loaded for the query.
    pub samples: Option<u64>,
}

/// One sample: `[<unix seconds>, "<value>"]`, the value a string so NaN and infinities fit.
#[derive(serde::Deserialize)]
struct Sample<'a>(f64, #[serde(borrow)] std::borrow::Cow<'a, str>);

impl Sample<'_> {
    fn value(&self) -> Result<f64, AnswerError> {
        self.1.parse().map_err(|_| {
            AnswerError::Malformed(serde::de::Error::custom(format!(
                "sample value {:?} is not a number",
                self.1
            )))
        })
    }
}

#[derive(serde::Deserialize)]
struct VectorSeries<'a> {
    metric: HashMap<String, String>,
    #[serde(borrow)]
    value: Sample<'a>,
}

/// Reads the body of an `/api/v1/query` answer: a vector or scalar answer becomes series; an
/// error answer, a malformed body or another result type is an [`AnswerError`].
pub fn read_answer(body: &[u8]) -> Result<Vec<Series>, AnswerError> {
    read_answer_with_stats(body).map(|answered| answered.series)
}

/// [`read_answer`], keeping the sample count of the query statistics when the answer has them.
pub fn read_answer_with_stats(body: &[u8]) -> Result<Answered, AnswerError> {
    let answer: Answer<'_> = serde_json::from_slice(body).map_err(AnswerError::Malformed)?;
    if answer.status != "success" {
        return Err(AnswerError::Refused {
            error_type: answer.error_type.unwrap_or_default(),
            error: answer
                .error
                .unwrap_or_else(|| format!("status {}", answer.status)),
        });
    }
    let data = answer
        .data
        .ok_or_else(|| AnswerError::ResultType("no".to_owned()))?;
    let samples = data
        .stats
        .and_then(|stats| stats.samples)
        .and_then(|samples| samples.total_queryable_samples);
    let raw = data.result.get();
    let series = match data.result_type.as_ref() {
        "vector" => {
            let vector: Vec<VectorSeries<'_>> =
                serde_json::from_str(raw).map_err(AnswerError::Malformed)?;
            vector
                .into_iter()
                .map(|series| {
                    Ok(Series {
                        timestamp: series.value.0,
                        value: series.value.value()?,
                        labels: series.metric,
                    })
                })
                .collect::<Result<_, _>>()?
        }
        "scalar" => {
            let sample: Sample<'_> = serde_json::from_str(raw).map_err(AnswerError::Malformed)?;
            vec![Series {
                labels: HashMap::new(),
                timestamp: sample.0,
                value: sample.value()?,
            }]
        }
        other => return Err(AnswerError::ResultType(other.to_owned())),
    };
    Ok(Answered { series, samples })
}

/// Parses a recorded `/api/v1/query` response body (Prometheus' JSON) into an outcome, as
/// [`read_answer`] does for live answers: a vector or scalar answer becomes series, an error
/// answer or a malformed body `QueryFailed`.
pub fn parse_query_response(body: &str) -> QueryOutcome {
    read_answer(body.as_bytes()).map_err(|_| UnknownReason::QueryFailed)
}
