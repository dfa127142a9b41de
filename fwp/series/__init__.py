"""Time-series classification, regular or irregular: continuous-time FWPs (Irie, Faccio &
Schmidhuber, NeurIPS 2022) against the neural CDE, GRU-Δt and the discrete FWP layers."""
