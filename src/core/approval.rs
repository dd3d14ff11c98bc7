//! The ad-set review rule: what an ad set's history is (its revisions, whether it is
//! retired), which revision plays, which revision an approver may approve and why not, and
//! how stored revision rows group into histories.
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
    /// The API token that uploaded it (None for files, and for rows stored before tokens
    /// were recorded): who the uploader is, since token names are only labels.
    pub uploaded_token: Option<i64>,
    pub uploaded_ms: i64,
    pub approved_by: Option<String>,
    pub approved_token: Option<i64>,
    pub approved_ms: Option<i64>,
}

/// Who retired an ad set, when, why, and the revisions it covers: every revision up to
/// `through_rev` (the latest when it was retired) stays retired for good; a revision
/// uploaded later plays once approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    pub by: String,
    pub at_ms: i64,
    pub through_rev: i64,
    /// Why, when not an operator's decision (e.g. its file was removed from schedules/).
    pub reason: Option<String>,
}

impl Retirement {
    /// Whether revision `rev` is retired by this retirement.
    pub fn covers(&self, rev: i64) -> bool {
        rev <= self.through_rev
    }
}

/// An ad set's revisions (by number) and the retirement in force, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct AdSetHistory {
    pub adset: String,
    pub revisions: Vec<Revision>,
    /// Some while the set is retired: its retirement covers every approved revision, so
    /// nothing of it plays. None once a revision uploaded after the retirement is approved.
    pub retired: Option<Retirement>,
}

impl AdSetHistory {
    /// The revision that plays: see [`playing`].
    pub fn playing(&self) -> Option<&Revision> {
        playing(&self.revisions, self.retired.as_ref())
    }
}

/// The revision that plays: the latest approved one, unless a retirement covers it. An
/// older approved revision never stands in for a retired or pending newer one.
pub fn playing<'r>(
    revisions: &'r [Revision],
    retired: Option<&Retirement>,
) -> Option<&'r Revision> {
    revisions
        .iter()
        .filter(|r| r.approved_by.is_some())
        .max_by_key(|r| r.rev)
        .filter(|r| !retired.is_some_and(|t| t.covers(r.rev)))
}

/// The stored retirement if it is still in force over `revisions`: it is until a revision
/// after it is approved.
pub fn in_force(revisions: &[Revision], retired: Option<Retirement>) -> Option<Retirement> {
    retired.filter(|t| {
        !revisions
            .iter()
            .any(|r| r.approved_by.is_some() && !t.covers(r.rev))
    })
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApproveError {
    #[error("no ad set {0:?}")]
    NotFound(String),
    #[error("ad set {0:?} is retired, and so is its latest revision: upload a new revision, then another operator approves it")]
    Retired(String),
    #[error("revision {1} of {0:?} is already approved")]
    AlreadyApproved(String, i64),
    #[error("revision {1} of {0:?} was uploaded by {2:?}: another operator (or an admin) must approve it")]
    OwnUpload(String, i64, String),
}

/// Who asks to approve: the token's id is the identity; its name is what the history shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approver<'a> {
    pub token: Option<i64>,
    pub name: &'a str,
    pub admin: bool,
}

/// Whether `by` uploaded `r`. Token ids decide when both are known: two people may hold
/// tokens with one name. A row without a token (stored before ids were recorded) can only
/// be compared by name.
fn uploaded_by(r: &Revision, by: &Approver<'_>) -> bool {
    match (r.uploaded_token, by.token) {
        (Some(up), Some(me)) => up == me,
        _ => r.uploaded_by == by.name,
    }
}

/// The revision `by` may approve in `adset` (always its latest), or why not. Retirement is
/// checked first: a retired revision is refused whoever asks (a retirement holds for every
/// revision it covers; only a revision uploaded after it can bring the set back). An
/// operator never approves their own upload, so every upload is seen by two people; an
/// admin may, to unblock a one-person shift.
pub fn approvable<'h>(
    adset: &str,
    history: Option<&'h AdSetHistory>,
    by: &Approver<'_>,
) -> Result<&'h Revision, ApproveError> {
    let history = history.filter(|h| !h.revisions.is_empty());
    let Some(latest) = history.and_then(|h| h.revisions.iter().max_by_key(|r| r.rev)) else {
        return Err(ApproveError::NotFound(adset.to_owned()));
    };
    if history.is_some_and(|h| h.retired.as_ref().is_some_and(|t| t.covers(latest.rev))) {
        return Err(ApproveError::Retired(adset.to_owned()));
    }
    if latest.approved_by.is_some() {
        return Err(ApproveError::AlreadyApproved(adset.to_owned(), latest.rev));
    }
    if uploaded_by(latest, by) && !by.admin {
        return Err(ApproveError::OwnUpload(
            adset.to_owned(),
            latest.rev,
            latest.uploaded_by.clone(),
        ));
    }
    Ok(latest)
}

/// The history of one ad set from its revision rows (in revision order) and its stored
/// retirement; None when it has no revisions, even if a retirement row is left over.
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
        retired: in_force(&revisions, retired),
        revisions,
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
    for h in &mut out {
        h.retired = in_force(&h.revisions, h.retired.take());
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
            uploaded_token: None,
            uploaded_ms: n * 1_000,
            approved_by: approved_by.map(str::to_owned),
            approved_token: None,
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

    fn retired_through(through_rev: i64) -> Retirement {
        Retirement {
            by: "carol".to_owned(),
            at_ms: 7_000,
            through_rev,
            reason: None,
        }
    }

    fn op(name: &str) -> Approver<'_> {
        Approver {
            token: None,
            name,
            admin: false,
        }
    }

    fn admin(name: &str) -> Approver<'_> {
        Approver {
            token: None,
            name,
            admin: true,
        }
    }

    #[test]
    fn no_history_or_no_revisions_is_not_found() {
        let nf = Err(ApproveError::NotFound("civility".to_owned()));
        assert_eq!(approvable("civility", None, &admin("bob")), nf);
        let empty = history(Vec::new(), None);
        assert_eq!(approvable("civility", Some(&empty), &admin("bob")), nf);
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
            approvable("civility", Some(&h), &op("bob")).map(|r| r.rev),
            Ok(2)
        );
    }

    #[test]
    fn an_operator_never_approves_their_own_upload() {
        let h = history(vec![rev("civility", 3, "alice", None)], None);
        assert_eq!(
            approvable("civility", Some(&h), &op("alice")),
            Err(ApproveError::OwnUpload(
                "civility".to_owned(),
                3,
                "alice".to_owned()
            ))
        );
    }

    #[test]
    fn the_uploader_is_known_by_token_not_by_name() {
        let mut upload = rev("civility", 1, "ci", None);
        upload.uploaded_token = Some(7);
        let h = history(vec![upload], None);
        let same_token = Approver {
            token: Some(7),
            name: "renamed",
            admin: false,
        };
        assert_eq!(
            approvable("civility", Some(&h), &same_token),
            Err(ApproveError::OwnUpload(
                "civility".to_owned(),
                1,
                "ci".to_owned()
            )),
            "the uploading token is refused whatever name it shows"
        );
        let other_holder = Approver {
            token: Some(8),
            name: "ci",
            admin: false,
        };
        assert_eq!(
            approvable("civility", Some(&h), &other_holder).map(|r| r.rev),
            Ok(1),
            "another token with the same name is another person"
        );
    }

    #[test]
    fn an_admin_may_approve_their_own_upload() {
        let h = history(vec![rev("civility", 4, "alice", None)], None);
        assert_eq!(
            approvable("civility", Some(&h), &admin("alice")).map(|r| r.rev),
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
            approvable("civility", Some(&h), &admin("carol")),
            Err(ApproveError::AlreadyApproved("civility".to_owned(), 2))
        );
    }

    #[test]
    fn a_retired_revision_is_refused_before_any_other_check() {
        // Pending, approvable otherwise: retirement wins.
        let h = history(
            vec![rev("civility", 1, "alice", None)],
            Some(retired_through(1)),
        );
        assert_eq!(
            approvable("civility", Some(&h), &admin("bob")),
            Err(ApproveError::Retired("civility".to_owned()))
        );
        // Already approved and own upload: retirement still answers first.
        let h = history(
            vec![rev("civility", 1, "bob", Some("alice"))],
            Some(retired_through(1)),
        );
        assert_eq!(
            approvable("civility", Some(&h), &op("bob")),
            Err(ApproveError::Retired("civility".to_owned()))
        );
    }

    #[test]
    fn a_revision_uploaded_after_retirement_is_approvable_and_plays_alone() {
        let revisions = vec![
            rev("civility", 1, "alice", Some("bob")),
            rev("civility", 2, "alice", None),
        ];
        let h =
            history_of("civility", revisions.clone(), Some(retired_through(1))).expect("history");
        assert_eq!(h.retired, Some(retired_through(1)), "still retired");
        assert_eq!(h.playing(), None, "the retired revision does not play");
        assert_eq!(
            approvable("civility", Some(&h), &op("bob")).map(|r| r.rev),
            Ok(2)
        );
        let mut approved = revisions;
        approved[1].approved_by = Some("bob".to_owned());
        let h = history_of("civility", approved, Some(retired_through(1))).expect("history");
        assert_eq!(h.retired, None, "live again with the new revision");
        assert_eq!(h.playing().map(|r| r.rev), Some(2));
    }

    #[test]
    fn playing_is_the_latest_approved_revision_not_covered() {
        let revisions = vec![
            rev("civility", 1, "alice", Some("bob")),
            rev("civility", 2, "alice", Some("bob")),
            rev("civility", 3, "alice", None),
        ];
        assert_eq!(playing(&revisions, None).map(|r| r.rev), Some(2));
        assert_eq!(
            playing(&revisions, Some(&retired_through(1))).map(|r| r.rev),
            Some(2)
        );
        assert_eq!(playing(&revisions, Some(&retired_through(2))), None);
        assert_eq!(playing(&revisions, Some(&retired_through(3))), None);
        assert_eq!(playing(&revisions[2..], None), None, "pending only");
    }

    #[test]
    fn rows_group_into_histories_with_their_own_retirement() {
        let rows = vec![
            rev("Zoo", 1, "carol", None),
            rev("Zoo", 2, "dave", None),
            rev("civility", 1, "alice", Some("bob")),
            rev("parks", 1, "file", Some("file")),
            rev("parks", 2, "file", Some("file")),
        ];
        let retired = HashMap::from([
            (
                "Zoo".to_owned(),
                Retirement {
                    at_ms: 9_200,
                    ..retired_through(2)
                },
            ),
            ("parks".to_owned(), retired_through(1)),
            ("gone".to_owned(), retired_through(1)),
        ]);
        let all = group_histories(rows, retired);
        let names: Vec<&str> = all.iter().map(|h| h.adset.as_str()).collect();
        assert_eq!(names, vec!["Zoo", "civility", "parks"]);
        assert_eq!(all[0].revisions.len(), 2);
        assert_eq!(all[0].retired.as_ref().map(|r| r.at_ms), Some(9_200));
        assert_eq!(all[1].retired, None);
        assert_eq!(all[2].revisions[0].uploaded_by, "file");
        assert_eq!(
            all[2].retired, None,
            "a revision approved after the retirement ends it"
        );
        assert_eq!(all[2].playing().map(|r| r.rev), Some(2));
        assert!(group_histories(Vec::new(), HashMap::new()).is_empty());
    }

    #[test]
    fn history_of_an_ad_set_without_revisions_is_none() {
        assert_eq!(
            history_of("gone", Vec::new(), Some(retired_through(1))),
            None
        );
        let h = history_of("civility", vec![rev("civility", 1, "alice", None)], None);
        assert_eq!(h.map(|h| h.revisions.len()), Some(1));
    }
}
