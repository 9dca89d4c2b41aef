"""Gateware of the board link: UART, the SLIP/CRC command bridge to the engine host bus."""
