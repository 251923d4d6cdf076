//! Placing a plan onto discovered hardware: which physical cores and which RAM each slice gets.
