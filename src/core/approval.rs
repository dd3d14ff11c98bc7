//! The ad-set review rule: what an ad set's history is (its revisions, whether it is
//! retired), which revision an approver may approve and why not, and how stored revision
//! rows group into histories.
//!
//! Pure core: both store backends load the rows, ask these functions, then write what they
//! answer, so the four-eyes rule is written once. Must not touch the database, HTTP or the
//! clock: times come in as plain milliseconds.

use std::collections::HashMap;

/// One revision of an ad set.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub adset: String,
    pub rev: i64,
    pub format: String,
    pub body: String,
    pub origin: String,
    pub uploaded_by: String,
    pub uploaded_ms: i64,
    pub approved_by: Option<String>,
    pub approved_ms: Option<i64>,
}

/// Who retired an ad set, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub by: String,
    pub at_ms: i64,
}

/// An ad set's revisions (by number) and whether it is retired.
#[derive(Debug, Clone, PartialEq)]
pub struct AdSetHistory {
    pub adset: String,
    pub revisions: Vec<Revision>,
    pub retired: Option<Retirement>,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApproveError {
    #[error("no ad set {0:?}")]
    NotFound(String),
    #[error("ad set {0:?} is retired")]
    Retired(String),
    #[error("revision {1} of {0:?} is already approved")]
    AlreadyApproved(String, i64),
    #[error("revision {1} of {0:?} was uploaded by {2:?}: another operator (or an admin) must approve it")]
    OwnUpload(String, i64, String),
}

/// The revision `by` may approve in `adset` (always its latest), or why not. Retirement is
/// checked first: a retired set is refused whoever asks. An operator never approves their
/// own upload, so every upload is seen by two people; an admin may, to unblock a one-person
/// shift.
pub fn approvable<'h>(
    adset: &str,
    history: Option<&'h AdSetHistory>,
    by: &str,
    admin: bool,
) -> Result<&'h Revision, ApproveError> {
    let history = history.filter(|h| !h.revisions.is_empty());
    let Some(latest) = history.and_then(|h| h.revisions.iter().max_by_key(|r| r.rev)) else {
        return Err(ApproveError::NotFound(adset.to_owned()));
    };
    if history.is_some_and(|h| h.retired.is_some()) {
        return Err(ApproveError::Retired(adset.to_owned()));
    }
    if latest.approved_by.is_some() {
        return Err(ApproveError::AlreadyApproved(adset.to_owned(), latest.rev));
    }
    if latest.uploaded_by == by && !admin {
        return Err(ApproveError::OwnUpload(
            adset.to_owned(),
            latest.rev,
            by.to_owned(),
        ));
    }
    Ok(latest)
}

/// The history of one ad set from its revision rows (in revision order); None when it has
/// none, even if a retirement row is left over.
pub fn history_of(
    adset: &str,
    revisions: Vec<Revision>,
    retired: Option<Retirement>,
) -> Option<AdSetHistory> {
    if revisions.is_empty() {
        return None;
    }
    Some(AdSetHistory {
        adset: adset.to_owned(),
        revisions,
        retired,
    })
}

/// Groups revision rows, sorted by ad set then revision, into one history per ad set, each
/// with its own retirement. The order of the rows is kept: the backends sort names alike.
pub fn group_histories(
    revisions: Vec<Revision>,
    mut retired: HashMap<String, Retirement>,
) -> Vec<AdSetHistory> {
    let mut out: Vec<AdSetHistory> = Vec::new();
    for rev in revisions {
        match out.last_mut() {
            Some(h) if h.adset == rev.adset => h.revisions.push(rev),
            _ => out.push(AdSetHistory {
                adset: rev.adset.clone(),
                retired: retired.remove(&rev.adset),
                revisions: vec![rev],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(adset: &str, n: i64, by: &str, approved_by: Option<&str>) -> Revision {
        Revision {
            adset: adset.to_owned(),
            rev: n,
            format: "toml".to_owned(),
            body: String::new(),
            origin: "upload".to_owned(),
            uploaded_by: by.to_owned(),
            uploaded_ms: n * 1_000,
            approved_by: approved_by.map(str::to_owned),
            approved_ms: approved_by.map(|_| n * 1_000 + 1),
        }
    }

    fn history(revisions: Vec<Revision>, retired: Option<Retirement>) -> AdSetHistory {
        AdSetHistory {
            adset: "civility".to_owned(),
            revisions,
            retired,
        }
    }

    #[test]
    fn no_history_or_no_revisions_is_not_found() {
        let nf = Err(ApproveError::NotFound("civility".to_owned()));
        assert_eq!(approvable("civility", None, "bob", true), nf);
        let empty = history(Vec::new(), None);
        assert_eq!(approvable("civility", Some(&empty), "bob", true), nf);
    }

    #[test]
    fn another_operator_approves_the_latest_revision() {
        let h = history(
            vec![
                rev("civility", 1, "bob", Some("alice")),
                rev("civility", 2, "alice", None),
            ],
            None,
        );
        assert_eq!(
            approvable("civility", Some(&h), "bob", false).map(|r| r.rev),
            Ok(2)
        );
    }

    #[test]
    fn an_operator_never_approves_their_own_upload() {
        let h = history(vec![rev("civility", 3, "alice", None)], None);
        assert_eq!(
            approvable("civility", Some(&h), "alice", false),
            Err(ApproveError::OwnUpload(
                "civility".to_owned(),
                3,
                "alice".to_owned()
            ))
        );
    }

    #[test]
    fn an_admin_may_approve_their_own_upload() {
        let h = history(vec![rev("civility", 4, "alice", None)], None);
        assert_eq!(
            approvable("civility", Some(&h), "alice", true).map(|r| r.rev),
            Ok(4)
        );
    }

    #[test]
    fn an_approved_latest_revision_is_not_approved_again() {
        let h = history(
            vec![
                rev("civility", 1, "alice", None),
                rev("civility", 2, "alice", Some("bob")),
            ],
            None,
        );
        assert_eq!(
            approvable("civility", Some(&h), "carol", true),
            Err(ApproveError::AlreadyApproved("civility".to_owned(), 2))
        );
    }

    #[test]
    fn a_retired_set_is_refused_before_any_other_check() {
        let retired = Some(Retirement {
            by: "carol".to_owned(),
            at_ms: 7_000,
        });
        // Pending, approvable otherwise: retirement wins.
        let h = history(vec![rev("civility", 1, "alice", None)], retired.clone());
        assert_eq!(
            approvable("civility", Some(&h), "bob", true),
            Err(ApproveError::Retired("civility".to_owned()))
        );
        // Already approved and own upload: retirement still answers first.
        let h = history(vec![rev("civility", 1, "bob", Some("alice"))], retired);
        assert_eq!(
            approvable("civility", Some(&h), "bob", false),
            Err(ApproveError::Retired("civility".to_owned()))
        );
    }

    #[test]
    fn rows_group_into_histories_with_their_own_retirement() {
        let rows = vec![
            rev("Zoo", 1, "carol", None),
            rev("Zoo", 2, "dave", None),
            rev("civility", 1, "alice", Some("bob")),
            rev("parks", 1, "file", Some("file")),
        ];
        let retired = HashMap::from([
            (
                "Zoo".to_owned(),
                Retirement {
                    by: "erin".to_owned(),
                    at_ms: 9_200,
                },
            ),
            (
                "gone".to_owned(),
                Retirement {
                    by: "erin".to_owned(),
                    at_ms: 1,
                },
            ),
        ]);
        let all = group_histories(rows, retired);
        let names: Vec<&str> = all.iter().map(|h| h.adset.as_str()).collect();
        assert_eq!(names, vec!["Zoo", "civility", "parks"]);
        assert_eq!(all[0].revisions.len(), 2);
        assert_eq!(all[0].retired.as_ref().map(|r| r.at_ms), Some(9_200));
        assert_eq!(all[1].retired, None);
        assert_eq!(all[2].revisions[0].uploaded_by, "file");
        assert!(group_histories(Vec::new(), HashMap::new()).is_empty());
    }

    #[test]
    fn history_of_an_ad_set_without_revisions_is_none() {
        let gone = Some(Retirement {
            by: "erin".to_owned(),
            at_ms: 1,
        });
        assert_eq!(history_of("gone", Vec::new(), gone), None);
        let h = history_of("civility", vec![rev("civility", 1, "alice", None)], None);
        assert_eq!(h.map(|h| h.revisions.len()), Some(1));
    }
}
