//! Reassembly of DIMSE messages from presentation data values (PS3.8 9.3.5, PS3.7 6.3.1), the
//! same for every role: command fragments are joined (at most [`MAX_COMMAND_LEN`]) and decoded;
//! data set fragments are handed back as they arrive, borrowed from the PDU buffer, so a caller
//! that streams them to a file never holds a whole data set in memory.
//!
//! The assembler enforces the rules of the message layer, not the meaning of the commands:
//! every PDV on an accepted presentation context; a data set only after a command that announced
//! one, on that command's context; no command fragment while such a data set is still expected;
//! optionally a cap on the data set's size (callers that keep it in memory).

use crate::command::{CommandSet, MAX_COMMAND_LEN};
use crate::pdata::{Pdv, abort_reason};

/// What one PDV made of the message in progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A command fragment that is not the last one: nothing to do yet.
    Partial,
    /// A whole command set. If it announced a data set ([`CommandSet::has_dataset`]), the
    /// fragments that follow are [`Piece::Data`] of it.
    Command {
        /// Its presentation context.
        context_id: u8,
        /// The decoded command.
        command: CommandSet,
    },
    /// A data set fragment of the command last returned.
    Data {
        /// Its presentation context (the command's).
        context_id: u8,
        /// The fragment, borrowed from the PDU.
        data: &'a [u8],
        /// Last fragment of the data set: the message is complete.
        is_last: bool,
    },
}

/// A PDV that breaks the message layer: the association is aborted
/// ([`AssembleError::abort_reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssembleError {
    /// A PDV on a presentation context that was not accepted.
    #[error("data on presentation context {0}, which was not accepted")]
    UnknownContext(u8),
    /// A command fragment while a data set was announced and not finished.
    #[error("a command arrived while a data set was still expected")]
    CommandDuringData,
    /// A data set fragment with no command announcing one.
    #[error("a data set fragment arrived without a command")]
    DataWithoutCommand,
    /// A data set fragment on another context than its command's.
    #[error("data set fragment on another presentation context than its command")]
    ContextSwitch,
    /// A command fragment on another context than the previous fragments.
    #[error("command fragment on another presentation context than the previous ones")]
    CommandContextSwitch,
    /// The command set is larger than [`MAX_COMMAND_LEN`].
    #[error("command set larger than 64 KiB")]
    CommandTooLarge,
    /// The command set does not decode.
    #[error("undecodable command: {0}")]
    Undecodable(String),
    /// The data set is larger than the assembler's cap.
    #[error("data set larger than {0} bytes")]
    DataTooLarge(u64),
}

impl AssembleError {
    /// The A-ABORT reason (service provider) this error is answered with.
    pub fn abort_reason(&self) -> u8 {
        match self {
            AssembleError::CommandDuringData | AssembleError::DataWithoutCommand => {
                abort_reason::UNEXPECTED_PDU
            }
            _ => abort_reason::INVALID_PARAMETER,
        }
    }
}

/// The data set in progress.
#[derive(Debug, Clone, Copy)]
struct Expected {
    context_id: u8,
    received: u64,
}

/// Joins PDVs into messages; one per association.
#[derive(Debug, Clone)]
pub struct Assembler {
    /// Accepted presentation context ids (bit set).
    accepted: [u64; 4],
    command: Vec<u8>,
    command_context: Option<u8>,
    data: Option<Expected>,
    data_limit: Option<u64>,
}

impl Assembler {
    /// An assembler for an association that accepted these presentation context ids.
    pub fn new(accepted: impl IntoIterator<Item = u8>) -> Self {
        let mut set = [0u64; 4];
        for id in accepted {
            set[usize::from(id / 64)] |= 1 << (id % 64);
        }
        Assembler {
            accepted: set,
            command: Vec::new(),
            command_context: None,
            data: None,
            data_limit: None,
        }
    }

    /// Refuses data sets longer than `limit` bytes (for callers that keep them in memory).
    pub fn with_data_limit(mut self, limit: u64) -> Self {
        self.data_limit = Some(limit);
        self
    }

    /// True while a data set announced by a command is not complete.
    pub fn expecting_data(&self) -> bool {
        self.data.is_some()
    }

    /// True between messages (no command fragment and no data set pending).
    pub fn idle(&self) -> bool {
        self.data.is_none() && self.command_context.is_none()
    }

    fn is_accepted(&self, id: u8) -> bool {
        self.accepted[usize::from(id / 64)] & (1 << (id % 64)) != 0
    }

    /// Takes one PDV.
    pub fn push<'a>(&mut self, pdv: &Pdv<'a>) -> Result<Piece<'a>, AssembleError> {
        if !self.is_accepted(pdv.context_id) {
            return Err(AssembleError::UnknownContext(pdv.context_id));
        }
        if pdv.is_command {
            if self.data.is_some() {
                return Err(AssembleError::CommandDuringData);
            }
            if self.command_context.is_some_and(|c| c != pdv.context_id) {
                return Err(AssembleError::CommandContextSwitch);
            }
            if self.command.len() + pdv.data.len() > MAX_COMMAND_LEN {
                return Err(AssembleError::CommandTooLarge);
            }
            self.command.extend_from_slice(pdv.data);
            self.command_context = Some(pdv.context_id);
            if !pdv.is_last {
                return Ok(Piece::Partial);
            }
            self.command_context = None;
            let command = CommandSet::decode(&self.command)
                .map_err(|e| AssembleError::Undecodable(e.to_string()));
            self.command.clear();
            let command = command?;
            if command.has_dataset() {
                self.data = Some(Expected {
                    context_id: pdv.context_id,
                    received: 0,
                });
            }
            return Ok(Piece::Command {
                context_id: pdv.context_id,
                command,
            });
        }
        let Some(expected) = self.data.as_mut() else {
            return Err(AssembleError::DataWithoutCommand);
        };
        if expected.context_id != pdv.context_id {
            return Err(AssembleError::ContextSwitch);
        }
        expected.received += pdv.data.len() as u64;
        if let Some(limit) = self.data_limit {
            if expected.received > limit {
                return Err(AssembleError::DataTooLarge(limit));
            }
        }
        let context_id = expected.context_id;
        if pdv.is_last {
            self.data = None;
        }
        Ok(Piece::Data {
            context_id,
            data: pdv.data,
            is_last: pdv.is_last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{echo_rq, store_rq};

    fn pdv(context_id: u8, is_command: bool, is_last: bool, data: &[u8]) -> Pdv<'_> {
        Pdv {
            context_id,
            is_command,
            is_last,
            data,
        }
    }

    #[test]
    fn command_in_fragments_then_streamed_data() {
        let mut a = Assembler::new([1, 3]);
        let cmd = store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3").encode();
        let (x, y) = cmd.split_at(10);
        assert!(a.idle());
        assert_eq!(a.push(&pdv(3, true, false, x)), Ok(Piece::Partial));
        assert!(!a.idle());
        match a.push(&pdv(3, true, true, y)) {
            Ok(Piece::Command {
                context_id: 3,
                command,
            }) => assert_eq!(command.message_id(), Some(7)),
            other => panic!("{other:?}"),
        }
        assert!(a.expecting_data());
        assert_eq!(
            a.push(&pdv(3, false, false, b"ab")),
            Ok(Piece::Data {
                context_id: 3,
                data: b"ab",
                is_last: false
            })
        );
        assert_eq!(
            a.push(&pdv(3, false, true, b"cd")),
            Ok(Piece::Data {
                context_id: 3,
                data: b"cd",
                is_last: true
            })
        );
        assert!(a.idle());
        // The next message starts afresh.
        let echo = echo_rq(8).encode();
        assert!(matches!(
            a.push(&pdv(1, true, true, &echo)),
            Ok(Piece::Command { context_id: 1, .. })
        ));
        assert!(a.idle());
    }

    #[test]
    fn refusals() {
        let store = store_rq(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3").encode();
        let mut a = Assembler::new([1, 3]);
        assert_eq!(
            a.push(&pdv(5, true, true, &store)),
            Err(AssembleError::UnknownContext(5))
        );
        assert_eq!(
            a.push(&pdv(1, false, true, b"x")),
            Err(AssembleError::DataWithoutCommand)
        );
        a.push(&pdv(1, true, true, &store)).expect("command");
        assert_eq!(
            a.push(&pdv(3, false, true, b"x")),
            Err(AssembleError::ContextSwitch)
        );
        assert_eq!(
            a.push(&pdv(1, true, true, &store)),
            Err(AssembleError::CommandDuringData)
        );

        let mut a = Assembler::new([1, 3]);
        a.push(&pdv(1, true, false, &store[..8])).expect("partial");
        assert_eq!(
            a.push(&pdv(3, true, true, &store[8..])),
            Err(AssembleError::CommandContextSwitch)
        );

        let mut a = Assembler::new([1]);
        let big = vec![0u8; MAX_COMMAND_LEN];
        a.push(&pdv(1, true, false, &big)).expect("at the limit");
        assert_eq!(
            a.push(&pdv(1, true, true, b"x")),
            Err(AssembleError::CommandTooLarge)
        );

        let mut a = Assembler::new([1]);
        assert!(matches!(
            a.push(&pdv(1, true, true, &[1, 0, 0, 0, 4, 0, 0, 0])),
            Err(AssembleError::Undecodable(_))
        ));

        let mut a = Assembler::new([1]).with_data_limit(3);
        a.push(&pdv(1, true, true, &store)).expect("command");
        a.push(&pdv(1, false, false, b"abc")).expect("at the cap");
        assert_eq!(
            a.push(&pdv(1, false, true, b"d")),
            Err(AssembleError::DataTooLarge(3))
        );
    }

    #[test]
    fn abort_reasons() {
        assert_eq!(
            AssembleError::DataWithoutCommand.abort_reason(),
            abort_reason::UNEXPECTED_PDU
        );
        assert_eq!(
            AssembleError::CommandDuringData.abort_reason(),
            abort_reason::UNEXPECTED_PDU
        );
        assert_eq!(
            AssembleError::UnknownContext(9).abort_reason(),
            abort_reason::INVALID_PARAMETER
        );
        assert_eq!(
            AssembleError::CommandTooLarge.abort_reason(),
            abort_reason::INVALID_PARAMETER
        );
    }

    #[test]
    fn context_ids_up_to_255() {
        let mut a = Assembler::new([255]);
        let echo = echo_rq(1).encode();
        assert!(a.push(&pdv(255, true, true, &echo)).is_ok());
        assert_eq!(
            a.push(&pdv(254, true, true, &echo)),
            Err(AssembleError::UnknownContext(254))
        );
    }
}
