#!/bin/sh
# Run once by the MySQL image on a new data volume: the rights of the brewline user (the one
# compose creates from MYSQL_USER): read the binlog (REPLICATION SLAVE, REPLICATION CLIENT),
# the snapshot's brief lock (RELOAD), the shop's database and the capture's offsets database.
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO '$MYSQL_USER'@'%';
GRANT ALL ON coffee_shop.* TO '$MYSQL_USER'@'%';
GRANT ALL ON brewline.* TO '$MYSQL_USER'@'%';
SQL
