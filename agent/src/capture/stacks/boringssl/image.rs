//! The loadable view of an ELF executable the analysis works on: its
//! `PT_LOAD` segments (file bytes, virtual address, permissions) and its
//! build-id. Kept apart from the ELF parser so tests can build an image from
//! hand-assembled code.

use object::{
    elf,
    read::elf::{ElfFile64, FileHeader, ProgramHeader},
    Endianness, Object,
};

use super::LocateError;

/// One `PT_LOAD` segment's bytes as they are in the file.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Virtual address of `data[0]`.
    pub vaddr: u64,
    /// File offset of `data[0]`.
    pub offset: u64,
    /// The segment's file-backed bytes (`p_filesz`).
    pub data: &'a [u8],
    pub exec: bool,
    pub write: bool,
}

impl Segment<'_> {
    pub fn contains(&self, vaddr: u64) -> bool {
        vaddr >= self.vaddr && vaddr - self.vaddr < self.data.len() as u64
    }
}

#[derive(Clone, Debug)]
pub struct Image<'a> {
    pub segments: Vec<Segment<'a>>,
    /// GNU build-id, hex.
    pub build_id: Option<String>,
}

impl<'a> Image<'a> {
    /// The loadable segments of a little-endian x86-64 ELF file.
    pub fn parse(path: &str, elf_bytes: &'a [u8]) -> Result<Self, LocateError> {
        let parse_err = |source| LocateError::Parse {
            path: path.to_owned(),
            source,
        };
        let file = ElfFile64::<Endianness>::parse(elf_bytes).map_err(parse_err)?;
        let endian = file.endian();
        let header = file.elf_header();
        if header.e_machine(endian) != elf::EM_X86_64 || !file.is_little_endian() {
            return Err(LocateError::NotX86_64 {
                path: path.to_owned(),
            });
        }
        let mut segments = Vec::new();
        for ph in file.elf_program_headers() {
            if ph.p_type(endian) != elf::PT_LOAD {
                continue;
            }
            let offset = ph.p_offset(endian);
            let filesz = ph.p_filesz(endian);
            let Some(data) = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(filesz).ok())
                .and_then(|(o, n)| elf_bytes.get(o..o.checked_add(n)?))
            else {
                return Err(LocateError::Truncated {
                    path: path.to_owned(),
                });
            };
            let flags = ph.p_flags(endian);
            segments.push(Segment {
                vaddr: ph.p_vaddr(endian),
                offset,
                data,
                exec: flags & elf::PF_X != 0,
                write: flags & elf::PF_W != 0,
            });
        }
        let build_id = file.build_id().ok().flatten().map(hex::encode);
        Ok(Self { segments, build_id })
    }

    /// The segment holding `vaddr`.
    pub fn segment_of(&self, vaddr: u64) -> Option<&Segment<'a>> {
        self.segments.iter().find(|s| s.contains(vaddr))
    }

    /// The file offset of a virtual address (what a uprobe is attached at).
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        self.segment_of(vaddr).map(|s| vaddr - s.vaddr + s.offset)
    }

    /// Executable code from `vaddr` to the end of its segment.
    pub fn code_at(&self, vaddr: u64) -> Option<&'a [u8]> {
        let s = self.segment_of(vaddr).filter(|s| s.exec)?;
        let start = usize::try_from(vaddr - s.vaddr).ok()?;
        s.data.get(start..)
    }

    /// The byte at `vaddr`, wherever it is mapped from the file.
    pub fn byte(&self, vaddr: u64) -> Option<u8> {
        let s = self.segment_of(vaddr)?;
        s.data.get(usize::try_from(vaddr - s.vaddr).ok()?).copied()
    }

    pub fn exec_segments(&self) -> impl Iterator<Item = &Segment<'a>> {
        self.segments.iter().filter(|s| s.exec)
    }

    /// Read-only data: segments neither writable nor executable, then
    /// read-only executable ones (older linkers put `.rodata` there).
    pub fn readonly_segments(&self) -> impl Iterator<Item = &Segment<'a>> {
        self.segments
            .iter()
            .filter(|s| !s.write && !s.exec)
            .chain(self.segments.iter().filter(|s| !s.write && s.exec))
    }
}
