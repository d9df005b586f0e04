//! Register images: what a device shows, per unit id, as contiguous blocks of registers.

use tokio_modbus::ExceptionCode;

/// A contiguous run of registers starting at PDU address `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub start: u16,
    pub words: Vec<u16>,
}

impl Block {
    fn end(&self) -> u32 {
        u32::from(self.start) + self.words.len() as u32
    }

    fn contains(&self, addr: u16, count: u16) -> bool {
        u32::from(addr) >= u32::from(self.start) && u32::from(addr) + u32::from(count) <= self.end()
    }
}

/// Everything one unit id (Modbus slave id) of a device shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitImage {
    pub unit: u8,
    pub blocks: Vec<Block>,
}

impl UnitImage {
    /// The registers `addr .. addr + count`, which must lie inside one block; otherwise
    /// exception 0x02 (illegal data address).
    pub fn read(&self, addr: u16, count: u16) -> Result<&[u16], ExceptionCode> {
        let block = self
            .blocks
            .iter()
            .find(|b| b.contains(addr, count))
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        let from = usize::from(addr - block.start);
        Ok(&block.words[from..from + usize::from(count)])
    }

    /// Whether `addr .. addr + count` lies inside one block.
    pub fn covers(&self, addr: u16, count: u16) -> bool {
        self.blocks.iter().any(|b| b.contains(addr, count))
    }
}

/// The register image of a whole device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub units: Vec<UnitImage>,
}

impl Image {
    pub fn unit(&self, unit: u8) -> Option<&UnitImage> {
        self.units.iter().find(|u| u.unit == unit)
    }
}
