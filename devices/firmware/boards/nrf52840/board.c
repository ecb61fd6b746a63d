/* Nordic nRF52840 (Cortex-M4F, 64 MHz, 256 KiB RAM, 1 MiB flash), e.g. the nRF52840 DK:
 * UARTE0 (EasyDMA) on P0.06 (TX) / P0.08 (RX), routed to the J-Link virtual COM port, at
 * UART_BAUD (make BAUD=, default 115200) 8N1; HFXO started for an accurate baud rate; DWT
 * CYCCNT for cycles; energy timestamp on P0.27 (TS_PIN).
 *
 * Receiving: one-byte EasyDMA transfers, double-buffered (nRF52840 PS, UARTE "reception with
 * double buffering"): the ENDRX->STARTRX short restarts reception in hardware, the RXSTARTED
 * interrupt points RXD.PTR at the other staging byte for the transfer after it, and the ENDRX
 * interrupt moves the finished byte into the ring of src/uart_rx.c (UARTE0 = IRQ 2). Unlike the
 * other boards the UARTE keeps receiving while the ring is full; such bytes are dropped and
 * counted as overruns (the host's pacing keeps that from happening). Not run on hardware in
 * this repository: compiled by the tests only. */
#include "board.h"

#define SCB_VTOR REG32(0xE000ED08u)
extern const void *const vector_table[];

#define CLOCK_TASKS_HFCLKSTART REG32(0x40000000u)
#define CLOCK_EVENTS_HFCLKSTARTED REG32(0x40000100u)
#define GPIO_OUTSET REG32(0x50000508u)
#define GPIO_OUTCLR REG32(0x5000050Cu)
#define GPIO_DIRSET REG32(0x50000518u)
#define CPACR REG32(0xE000ED88u)
#ifndef TS_PIN
#define TS_PIN 27
#endif
#define TX_PIN 6
#define RX_PIN 8

#define UARTE 0x40002000u
#define UARTE_TASKS_STARTRX    REG32(UARTE + 0x000)
#define UARTE_TASKS_STARTTX    REG32(UARTE + 0x008)
#define UARTE_EVENTS_ENDRX     REG32(UARTE + 0x110)
#define UARTE_EVENTS_ENDTX     REG32(UARTE + 0x120)
#define UARTE_EVENTS_ERROR     REG32(UARTE + 0x124)
#define UARTE_EVENTS_RXSTARTED REG32(UARTE + 0x14C)
#define UARTE_SHORTS           REG32(UARTE + 0x200)   /* bit 5: ENDRX_STARTRX */
#define UARTE_INTENSET         REG32(UARTE + 0x304)   /* 4 ENDRX, 9 ERROR, 19 RXSTARTED */
#define UARTE_ERRORSRC         REG32(UARTE + 0x480)   /* bit 0 OVERRUN (write 1 to clear) */
#define UARTE_ENABLE           REG32(UARTE + 0x500)   /* 8 = UARTE */
#define UARTE_PSEL_TXD         REG32(UARTE + 0x50C)
#define UARTE_PSEL_RXD         REG32(UARTE + 0x514)
#define UARTE_BAUDRATE         REG32(UARTE + 0x524)
#define UARTE_RXD_PTR          REG32(UARTE + 0x534)
#define UARTE_RXD_MAXCNT       REG32(UARTE + 0x538)
#define UARTE_TXD_PTR          REG32(UARTE + 0x544)
#define UARTE_TXD_MAXCNT       REG32(UARTE + 0x548)
#define UARTE_CONFIG           REG32(UARTE + 0x56C)

/* UARTE BAUDRATE values (nRF52840 PS v1.7, 6.34.10; they differ from the legacy UART's) */
#if UART_BAUD == 115200
#define BAUD_REG 0x01D60000u
#elif UART_BAUD == 57600
#define BAUD_REG 0x00EB0000u
#elif UART_BAUD == 38400
#define BAUD_REG 0x009D0000u
#elif UART_BAUD == 19200
#define BAUD_REG 0x004EA000u
#elif UART_BAUD == 9600
#define BAUD_REG 0x00275000u
#elif UART_BAUD == 1000000
#define BAUD_REG 0x10000000u
#else
#error "UART_BAUD: 9600, 19200, 38400, 57600, 115200 or 1000000"
#endif

static volatile uint8_t rx_stage[2];   /* EasyDMA targets (must be in RAM) */
static volatile uint8_t rx_cur;        /* staging byte of the transfer in progress */
static volatile uint8_t tx_byte;

void board_init(void)
{
    SCB_VTOR = (uint32_t)vector_table;   /* linked behind a bootloader: our vectors */
    CPACR |= (0xFu << 20);
    __asm volatile ("dsb\n isb");
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (!CLOCK_EVENTS_HFCLKSTARTED) { }
    GPIO_DIRSET = 1u << TS_PIN;
    GPIO_OUTSET = 1u << TS_PIN;           /* idle high; low = measured run (EnergyRunner) */

    GPIO_OUTSET = 1u << TX_PIN;           /* TX idles high before the UARTE takes the pin */
    GPIO_DIRSET = 1u << TX_PIN;
    UARTE_PSEL_TXD = TX_PIN;              /* port 0, CONNECT = 0 */
    UARTE_PSEL_RXD = RX_PIN;
    UARTE_BAUDRATE = BAUD_REG;
    UARTE_CONFIG = 0;                     /* 8N1, no flow control */
    UARTE_ENABLE = 8;
    rx_cur = 0;
    UARTE_RXD_PTR = (uint32_t)&rx_stage[0];
    UARTE_RXD_MAXCNT = 1;
    UARTE_SHORTS = 1u << 5;               /* ENDRX -> STARTRX: reception never pauses */
    UARTE_EVENTS_ENDRX = 0;
    UARTE_EVENTS_RXSTARTED = 0;
    UARTE_EVENTS_ERROR = 0;
    UARTE_INTENSET = (1u << 4) | (1u << 9) | (1u << 19);
    NVIC_ISER = 1u << UART_IRQN;
    UARTE_TASKS_STARTRX = 1;
}

void board_uart_isr(void)
{
    if (UARTE_EVENTS_ERROR) {
        UARTE_EVENTS_ERROR = 0;
        uint32_t src = UARTE_ERRORSRC;
        UARTE_ERRORSRC = src;
        if (src & 1u) rx_ring_overrun();
    }
    /* ENDRX before RXSTARTED: the finished staging byte is read before RXD.PTR hands it to
     * the transfer after next */
    if (UARTE_EVENTS_ENDRX) {
        UARTE_EVENTS_ENDRX = 0;
        uint8_t c = rx_stage[rx_cur];
        rx_cur ^= 1u;
        if (rx_ring_full()) rx_ring_overrun(); else rx_ring_put(c);
    }
    if (UARTE_EVENTS_RXSTARTED) {
        UARTE_EVENTS_RXSTARTED = 0;
        UARTE_RXD_PTR = (uint32_t)&rx_stage[rx_cur ^ 1u];   /* double-buffered register */
    }
    (void)UARTE_EVENTS_ENDRX;             /* read back: the event clear lands before return */
}

void uart_putc(uint8_t c)
{
    tx_byte = c;
    UARTE_TXD_PTR = (uint32_t)&tx_byte;
    UARTE_TXD_MAXCNT = 1;
    UARTE_EVENTS_ENDTX = 0;
    UARTE_TASKS_STARTTX = 1;
    while (!UARTE_EVENTS_ENDTX) { }
}

void board_ts_pin(int level)
{
    if (level) GPIO_OUTCLR = 1u << TS_PIN; else GPIO_OUTSET = 1u << TS_PIN;
}
