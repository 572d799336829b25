//! H.264 in MP4 and as the decoder takes it: an MP4 stores each frame's NAL
//! units behind their lengths, and the stream's parameter sets (SPS, PPS)
//! once in the `avcC` record; the decoder reads NAL units behind start
//! codes (Annex B), parameter sets first.

/// The start code in front of each NAL unit in Annex B.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL unit types this module tells apart (ITU-T H.264, table 7-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NalKind {
    /// A frame that refers to no other (a key frame).
    Idr,
    SequenceParameterSet,
    PictureParameterSet,
    Other,
}

impl NalKind {
    pub(crate) fn of(nal: &[u8]) -> Self {
        match nal.first().map(|header| header & 0x1f) {
            Some(5) => Self::Idr,
            Some(7) => Self::SequenceParameterSet,
            Some(8) => Self::PictureParameterSet,
            _ => Self::Other,
        }
    }
}

/// What an `avcC` record (AVCDecoderConfigurationRecord, ISO 14496-15
/// § 5.3.3.1) says: how many bytes hold each NAL unit's length in a sample,
/// and the parameter sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AvcConfig {
    pub(crate) length_size: usize,
    /// Sequence then picture parameter sets, each as a NAL unit.
    pub(crate) parameter_sets: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// Reads a record; the error says what is wrong with it.
    pub(crate) fn parse(record: &[u8]) -> Result<Self, String> {
        let mut at = Reader { bytes: record, at: 0 };
        let version = at.u8()?;
        if version != 1 {
            return Err(format!("its avcC record has version {version}, not 1"));
        }
        at.skip(3)?; // profile, compatibility, level
        let length_size = usize::from(at.u8()? & 0b11) + 1;
        if length_size == 3 {
            return Err("its avcC record gives NAL lengths of 3 bytes, which H.264 does not allow".into());
        }
        let mut parameter_sets = Vec::new();
        let sequence_sets = at.u8()? & 0b1_1111;
        for _ in 0..sequence_sets {
            let length = usize::from(at.u16()?);
            parameter_sets.push(at.take(length)?.to_vec());
        }
        let picture_sets = at.u8()?;
        for _ in 0..picture_sets {
            let length = usize::from(at.u16()?);
            parameter_sets.push(at.take(length)?.to_vec());
        }
        if sequence_sets == 0 || picture_sets == 0 {
            return Err("its avcC record holds no sequence or no picture parameter set".into());
        }
        Ok(Self {
            length_size,
            parameter_sets,
        })
    }

    /// The record for one SPS and one PPS, NAL lengths in 4 bytes.
    pub(crate) fn record(sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut record = vec![1, sps[1], sps[2], sps[3], 0b1111_1100 | 3, 0b1110_0000 | 1];
        record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        record.extend_from_slice(sps);
        record.push(1);
        record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        record.extend_from_slice(pps);
        record
    }

    /// Appends the parameter sets to `out` in Annex B.
    pub(crate) fn write_parameter_sets(&self, out: &mut Vec<u8>) {
        for set in &self.parameter_sets {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
    }

    /// Appends a sample's NAL units to `out` in Annex B; a length that runs
    /// past the sample is an error.
    pub(crate) fn write_sample(&self, sample: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        let mut at = Reader { bytes: sample, at: 0 };
        while at.at < sample.len() {
            let length = at
                .take(self.length_size)?
                .iter()
                .fold(0usize, |n, b| n << 8 | usize::from(*b));
            let nal = at.take(length)?;
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        Ok(())
    }
}

/// An encoded frame as an MP4 sample: its NAL units behind 4-byte lengths,
/// with the parameter sets taken out (they go to the `avcC` record).
pub(crate) struct Sample {
    pub(crate) bytes: Vec<u8>,
    pub(crate) key_frame: bool,
    pub(crate) sps: Option<Vec<u8>>,
    pub(crate) pps: Option<Vec<u8>>,
}

/// Splits an Annex B stream into a sample.
pub(crate) fn sample_from_annex_b(stream: &[u8]) -> Sample {
    let mut sample = Sample {
        bytes: Vec::with_capacity(stream.len()),
        key_frame: false,
        sps: None,
        pps: None,
    };
    for nal in nal_units(stream) {
        match NalKind::of(nal) {
            NalKind::SequenceParameterSet => sample.sps = Some(nal.to_vec()),
            NalKind::PictureParameterSet => sample.pps = Some(nal.to_vec()),
            kind => {
                sample.key_frame |= kind == NalKind::Idr;
                sample.bytes.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                sample.bytes.extend_from_slice(nal);
            }
        }
    }
    sample
}

/// The NAL units of an Annex B stream, without their start codes (3 or 4 bytes).
fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let starts: Vec<(usize, usize)> = stream
        .windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(|(i, _)| (i, i + 3))
        .collect();
    (0..starts.len()).map(move |k| {
        let begin = starts[k].1;
        let mut end = starts.get(k + 1).map_or(stream.len(), |next| next.0);
        // A 4-byte start code's leading zero belongs to the code, not the unit.
        if end > begin && k + 1 < starts.len() && stream[end - 1] == 0 {
            end -= 1;
        }
        &stream[begin..end]
    })
}

/// Big-endian reads that fail with a message instead of running past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "a length of {n} bytes at byte {} runs past the end ({} bytes)",
                    self.at,
                    self.bytes.len()
                )
            })?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 5] = [0x67, 0x42, 0xc0, 0x1e, 0xaa];
    const PPS: [u8; 3] = [0x68, 0xce, 0x3c];

    #[test]
    fn annex_b_becomes_a_sample_and_back() {
        let idr = [0x65, 0x88, 0x84, 0x00, 0x21];
        let mut stream = Vec::new();
        for nal in [&SPS[..], &PPS[..], &idr[..]] {
            stream.extend_from_slice(&START_CODE);
            stream.extend_from_slice(nal);
        }
        let sample = sample_from_annex_b(&stream);
        assert!(sample.key_frame);
        assert_eq!(sample.sps.as_deref(), Some(&SPS[..]));
        assert_eq!(sample.pps.as_deref(), Some(&PPS[..]));
        assert_eq!(sample.bytes[..4], [0, 0, 0, 5]);
        assert_eq!(sample.bytes[4..], idr);

        let config = AvcConfig::parse(&AvcConfig::record(&SPS, &PPS)).expect("a record");
        assert_eq!(config.length_size, 4);
        assert_eq!(config.parameter_sets, vec![SPS.to_vec(), PPS.to_vec()]);
        let mut annex_b = Vec::new();
        config.write_parameter_sets(&mut annex_b);
        config.write_sample(&sample.bytes, &mut annex_b).expect("whole");
        assert_eq!(annex_b, stream);
    }

    #[test]
    fn three_byte_start_codes_and_a_zero_ending_a_unit() {
        // A 3-byte code, then a 4-byte one: the fourth byte's zero is the code's.
        let stream = [0, 0, 1, 0x41, 0xaa, 0, 0, 0, 1, 0x41, 0xbb];
        let units: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(units, vec![&[0x41, 0xaa][..], &[0x41, 0xbb][..]]);
    }

    #[test]
    fn broken_records_and_samples_are_errors_not_panics() {
        let record = AvcConfig::record(&SPS, &PPS);
        for cut in 0..record.len() {
            assert!(AvcConfig::parse(&record[..cut]).is_err(), "cut at {cut}");
        }
        let config = AvcConfig::parse(&record).expect("a record");
        let mut out = Vec::new();
        let message = config
            .write_sample(&[0, 0, 0, 9, 0x65, 1], &mut out)
            .expect_err("a length past the end");
        assert!(message.contains("runs past the end"), "{message}");
        assert!(config.write_sample(&[0, 0], &mut out).is_err());
    }
}
