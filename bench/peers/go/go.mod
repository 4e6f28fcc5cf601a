module braidbench/peers

go 1.22
