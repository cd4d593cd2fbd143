#!/bin/sh
# Run once by the MySQL image on a new data volume, after 05-schema.sql made the tables (a
# table-level grant needs its table): the administrator (MYSQL_USER, compose made it) gets the
# shop's database for `brewline db init` and `db seed`, and each brewline process a user of its
# own with the least it needs. The GRANT statements are `brewline db grants --flavor mysql`'s,
# word for word (deploy/tests/test_deploy.py checks it); the passwords come from .env.
mysql -uroot -p"$MYSQL_ROOT_PASSWORD" <<SQL
GRANT ALL ON coffee_shop.* TO '$MYSQL_USER'@'%';
CREATE USER IF NOT EXISTS 'brewline_capture'@'%' IDENTIFIED BY '$MYSQL_CAPTURE_PASSWORD';
CREATE USER IF NOT EXISTS 'brewline_tills'@'%' IDENTIFIED BY '$MYSQL_TILLS_PASSWORD';
CREATE USER IF NOT EXISTS 'brewline_accept'@'%' IDENTIFIED BY '$MYSQL_ACCEPT_PASSWORD';
CREATE USER IF NOT EXISTS 'brewline_batch'@'%' IDENTIFIED BY '$MYSQL_BATCH_PASSWORD';
CREATE USER IF NOT EXISTS 'brewline_cache'@'%' IDENTIFIED BY '$MYSQL_CACHE_PASSWORD';
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO 'brewline_capture'@'%';
GRANT SELECT ON \`coffee_shop\`.\`orders\` TO 'brewline_capture'@'%';
GRANT SELECT ON \`coffee_shop\`.\`order_details\` TO 'brewline_capture'@'%';
GRANT CREATE, SELECT, INSERT, UPDATE ON \`brewline\`.* TO 'brewline_capture'@'%';
GRANT SELECT ON \`coffee_shop\`.\`stores\` TO 'brewline_tills'@'%';
GRANT SELECT ON \`coffee_shop\`.\`payment_method\` TO 'brewline_tills'@'%';
GRANT SELECT ON \`coffee_shop\`.\`product_category\` TO 'brewline_tills'@'%';
GRANT SELECT ON \`coffee_shop\`.\`products\` TO 'brewline_tills'@'%';
GRANT SELECT ON \`coffee_shop\`.\`customers\` TO 'brewline_tills'@'%';
GRANT SELECT, INSERT ON \`coffee_shop\`.\`orders\` TO 'brewline_tills'@'%';
GRANT SELECT, INSERT ON \`coffee_shop\`.\`order_details\` TO 'brewline_tills'@'%';
GRANT INSERT ON \`coffee_shop\`.\`order_details\` TO 'brewline_accept'@'%';
GRANT SELECT ON \`coffee_shop\`.\`stores\` TO 'brewline_batch'@'%';
GRANT SELECT ON \`coffee_shop\`.\`payment_method\` TO 'brewline_batch'@'%';
GRANT SELECT ON \`coffee_shop\`.\`product_category\` TO 'brewline_batch'@'%';
GRANT SELECT ON \`coffee_shop\`.\`products\` TO 'brewline_batch'@'%';
GRANT SELECT ON \`coffee_shop\`.\`stores\` TO 'brewline_cache'@'%';
GRANT SELECT ON \`coffee_shop\`.\`payment_method\` TO 'brewline_cache'@'%';
GRANT SELECT ON \`coffee_shop\`.\`product_category\` TO 'brewline_cache'@'%';
GRANT SELECT ON \`coffee_shop\`.\`products\` TO 'brewline_cache'@'%';
GRANT SELECT ON \`coffee_shop\`.\`customers\` TO 'brewline_cache'@'%';
SQL
